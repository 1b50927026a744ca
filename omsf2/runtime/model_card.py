"""A bundle's model card: built from recorded facts only, as JSON, and as Markdown rendered from the JSON.

``omsf2 bundle`` writes ``model_card.json`` and ``MODEL_CARD.md`` into every bundle, hashed in the
manifest like every other file (so covered by its digest and signature). Every value comes from a
record: the bundle's manifest (name, version, intended use, classes, what it accepts, the trace)
and the export's ``report.json``, which holds the export's own figures (FP32 on the gate set with
its confusion matrix and 95 % intervals, each flavour's INT8 gate, subgroups, caveats, versions)
and the facts the export copied from the checkpoint (data record, recipe, validation metrics,
:mod:`omsf2.export.evidence`), since a bundle cannot load a checkpoint (no torch here). Sentences
are templates filled with those facts; none is typed by hand for a model. A fact that was not
recorded (an older checkpoint, an export without ``--int8``) reads "not recorded", never a guess.

The card follows the sections of Mitchell et al. 2019, "Model Cards for Model Reporting", and the
model-description items of the FDA's January 2025 draft guidance on AI-enabled device software
functions; ``follows`` maps each to the card's keys. The Markdown is :func:`render_markdown` of the
JSON, so the two carry the same numbers (percentages rounded to two decimals in the Markdown).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
CARD_FORMAT = "omsf2-model-card"
CARD_FORMAT_VERSION = 1
NOT_RECORDED = "not recorded"
INTERVALS = (
    "95 %: Wilson score (accuracy); percentile bootstrap over the gate images, 2000 resamples, seed 0 (macro-F1)"
)
FOLLOWS = (
    {
        "name": "Model Cards for Model Reporting",
        "citation": "Mitchell M., Wu S., Zaldivar A., Barnes P., Vasserman L., Hutchinson B., Spitzer E., Raji I. D., "
        "Gebru T. Proceedings of FAT* 2019, pp. 220-229. arXiv:1810.03993",
        "sections": {
            "Model Details": "model_details, software",
            "Intended Use": "intended_use",
            "Factors": "evaluation.subgroups, int8_gates[].groups",
            "Metrics": "evaluation.fp32, int8_gates",
            "Evaluation Data": "evaluation.gate_set",
            "Training Data": "training_data",
            "Quantitative Analyses": "evaluation, int8_gates",
            "Ethical Considerations": NOT_RECORDED,
            "Caveats and Recommendations": "limitations",
        },
    },
    {
        "name": "Artificial Intelligence-Enabled Device Software Functions: Lifecycle Management and Marketing "
        "Submission Recommendations",
        "citation": "U.S. Food and Drug Administration, draft guidance, January 2025",
        "items": {
            "model description: inputs and outputs": "model_details.inputs, model_details.outputs",
            "model description: architecture": "model_details.architecture",
            "model description: pre-processing": "model_details.inputs.preprocess",
            "model description: training": "recipe",
            "data management: data lineage, sizes and splits": "training_data, trace",
            "performance validation: metrics with confidence intervals": "evaluation.fp32, int8_gates",
            "performance validation: subgroups": "evaluation.subgroups, int8_gates[].groups",
            "limitations": "limitations",
            "performance monitoring after deployment": "post_deployment_monitoring",
            "version control": "model_details.version, software, trace",
        },
    },
)
#: A gate record's fields the card copies as they are (``min_group_agreement`` is read by :func:`_bound`).
_GATE_KEYS = ("file", "passed", "failed_because", "eval_count", "eval_mode", "accuracy_drop", "accuracy_drop_ci95",
              "top1_agreement", "top1_agreement_ci95", "flipped", "max_drop", "min_agreement", "float_groups",
              "caveats", "small_groups")  # fmt: skip


def _nr(value: Any) -> Any:
    """``value``, or "not recorded" where it is None or missing."""
    return NOT_RECORDED if value is None else value


def _pick(rec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: _nr(rec.get(k)) for k in keys}


# --------------------------------------------------------------------------- the sections


def _details(meta: dict[str, Any], report: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    outputs = (meta.get("network_data_format") or {}).get("outputs") or {}
    return {
        "name": meta.get("name"),
        "version": meta.get("version"),
        "description": meta.get("description"),
        "task": meta.get("task"),
        "classes": list(meta.get("classes") or []),
        "architecture": _nr(training.get("model_config")),
        "inputs": {
            "preprocess": meta.get("preprocess"),
            "image": (meta.get("network_data_format") or {}).get("inputs", {}).get("image"),
        },
        "outputs": {"activation": (outputs.get("logits") or {}).get("activation"), "heatmap": "heatmap" in outputs},
        "checkpoint_sha256": _nr((report.get("checkpoint") or {}).get("sha256")),
        "model_files": dict(meta.get("artifacts") or {}),
        "references": list(meta.get("references") or []),
    }


def _training_data(training: dict[str, Any]) -> dict[str, Any]:
    rec = training.get("data_record")
    spec = training.get("data") or {}
    if not isinstance(rec, dict):
        return {
            "source": _nr(spec.get("source")),
            "splits": NOT_RECORDED,
            "shared_patients": NOT_RECORDED,
            "split_rule": NOT_RECORDED,
            "listing": NOT_RECORDED,
        }
    listing = rec.get("listing") or {}
    keys = ("kind", "path", "scope", "files", "bytes", "parameters", "sha256")
    return {
        "source": rec.get("source"),
        "splits": rec.get("splits"),
        "shared_patients": _nr(rec.get("shared_patients")),
        "split_rule": _nr(rec.get("split_rule")),
        "listing": {k: listing[k] for k in keys if k in listing},
    }


def _recipe(training: dict[str, Any]) -> dict[str, Any]:
    metrics = training.get("metrics") or {}
    return {
        "train_config": _nr(training.get("train_config")),
        "selection": _nr(training.get("selection")),
        "best_epoch": _nr(metrics.get("epoch")),
    }


def _first_gate(report: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (report[k] for k in ("int8", "int8_cpu") if isinstance(report.get(k), dict) and "fp32_accuracy" in report[k]),
        None,
    )


def _evaluation(meta: dict[str, Any], report: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    first = _first_gate(report)
    gate_data = report.get("gate_data") or {}
    part = gate_data.get("gate")
    gate_set: Any = NOT_RECORDED
    if isinstance(part, dict):
        gate_set = {
            "source": _nr(gate_data.get("source")),
            "patients_from": _nr(gate_data.get("patients_from")),
            **_pick(part, ("data_dir", "n", "patients", "per_class", "sha256")),
        }
    fp32: Any = NOT_RECORDED
    subgroups: Any = NOT_RECORDED
    if first is not None:
        fp32 = {
            "n": _nr(first.get("eval_count")),
            "accuracy": first.get("fp32_accuracy"),
            "accuracy_ci95": _nr(first.get("fp32_accuracy_ci95")),
            "macro_f1": _nr(first.get("fp32_macro_f1")),
            "macro_f1_ci95": _nr(first.get("fp32_macro_f1_ci95")),
            "per_class_recall": _nr(first.get("fp32_per_class_recall")),
            "confusion": _nr(first.get("fp32_confusion")),
            "classes": list(meta.get("classes") or []),
            "intervals": INTERVALS,
        }
        subgroups = [
            {"attribute": attr, "group": r.get("group"), "n": r.get("n"), "fp32_accuracy": r.get("fp32_accuracy")}
            for attr, rows in (first.get("groups") or {}).items()
            for r in rows
        ] or NOT_RECORDED
    metrics = training.get("metrics")
    validation: Any = NOT_RECORDED
    if isinstance(metrics, dict):
        validation = _pick(
            metrics,
            ("n", "accuracy", "macro_f1", "qwk", "macro_auc", "per_class_recall", "confusion", "epoch", "selected_on"),
        )
    return {"gate_set": gate_set, "fp32": fp32, "subgroups": subgroups, "validation": validation}


def _gates(meta: dict[str, Any], report: dict[str, Any]) -> list[dict[str, Any]]:
    shipped = set((meta.get("artifacts") or {}).values())
    out = []
    for key in ("int8", "int8_cpu"):
        rec = report.get(key)
        if isinstance(rec, dict):
            out.append(
                {
                    "flavour": key,
                    "source": f"report.json {key}",
                    **_pick(rec, _GATE_KEYS),
                    "min_group_agreement": _bound(rec),
                    "accuracy": _nr(rec.get("int8_accuracy")),
                    "macro_f1": _nr(rec.get("int8_macro_f1")),
                    "in_bundle": rec.get("file") in shipped,
                    "groups": _group_rows(rec),
                }
            )
    for name, rec in sorted((report.get("engine_gate") or {}).items()):
        out.append(
            {
                "flavour": name,
                "source": f"report.json engine_gate.{name}",
                **_pick(rec, _GATE_KEYS),
                "min_group_agreement": _bound(rec),
                "file": rec.get("engine"),
                "accuracy": _nr(rec.get("accuracy")),
                "macro_f1": NOT_RECORDED,
                "in_bundle": rec.get("engine") in shipped,
                "groups": _group_rows(rec),
            }
        )
    return out


def _bound(rec: dict[str, Any]) -> Any:
    """The gate's per-group bound: "off" where it was recorded as None, "not recorded" where absent."""
    if "min_group_agreement" not in rec:
        return NOT_RECORDED
    return "off" if rec["min_group_agreement"] is None else rec["min_group_agreement"]


def _group_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("group", "n", "fp32_accuracy", "accuracy", "top1_agreement", "flipped", "judged")
    return [
        {"attribute": attr, **{k: r.get(k) for k in keys}}
        for attr, rows in (rec.get("groups") or {}).items()
        for r in rows
    ]


def _limitations(meta: dict[str, Any], card: dict[str, Any]) -> list[dict[str, str]]:
    """Known limitations, each from a record: the classes, the input gating, the gates, what is not recorded."""
    out = []
    classes = ", ".join(meta.get("classes") or [])
    out.append(
        {
            "from": "classes",
            "text": f"Every image is assigned one of its classes ({classes}; task "
            f"{meta.get('task')}): a finding outside them is not reported as such.",
        }
    )
    acc = meta.get("accepts") or {}
    out.append(
        {
            "from": "accepts",
            "text": "DICOM images are declined (clinical input gating) unless Modality is one of "
            f"{', '.join(acc.get('modalities', []))}, BodyPartExamined one of {', '.join(acc.get('body_parts', []))} "
            f"and ViewPosition one of {', '.join(acc.get('views', []))}; PNG and JPEG carry no such attributes "
            "and are not gated.",
        }
    )
    for g in card["int8_gates"]:
        if g["passed"] is False:
            why = "; ".join(g["failed_because"]) if isinstance(g["failed_because"], list) else NOT_RECORDED
            out.append(
                {
                    "from": f"{g['source']} (gate)",
                    "text": f"{g['flavour']} ({g['file']}) failed its gate: {why}; it is not in this bundle.",
                }
            )
        for c in g["caveats"] if isinstance(g["caveats"], list) else []:
            out.append({"from": f"{g['source']} caveats", "text": f"{g['flavour']}: {c}."})
        if isinstance(g["small_groups"], list) and g["small_groups"]:
            out.append(
                {
                    "from": f"{g['source']} small_groups",
                    "text": f"{g['flavour']}: subgroups too small to judge: {', '.join(g['small_groups'])}.",
                }
            )
    if not card["int8_gates"]:
        out.append(
            {"from": "report.json", "text": "No accuracy gate ran in this export: no figures on held-out images."}
        )
    for section, key in (("training_data", "splits"), ("recipe", "train_config"), ("evaluation", "validation")):
        if card[section][key] == NOT_RECORDED:
            out.append(
                {
                    "from": f"{section}.{key}",
                    "text": f"{section}.{key} was not recorded (a checkpoint from "
                    "before omsf2 recorded it, or one written outside omsf2 train).",
                }
            )
    listing = card["training_data"]["listing"]
    if isinstance(listing, dict) and listing.get("kind") == "csv-folder":
        out.append({"from": "training_data.listing", "text": f"The data hash covers {listing.get('scope')}."})
    if card["post_deployment_monitoring"] == NOT_RECORDED:
        out.append({"from": "post_deployment_monitoring", "text": "No INT8 file in this bundle: nothing to monitor."})
    else:
        text = "The INT8 monitor runs only on a node started with --monitor; its figures are in its spool, not here."
        out.append({"from": "post_deployment_monitoring", "text": text})
    return out


def _monitoring(gates: list[dict[str, Any]]) -> Any:
    """The monitoring plan this bundle supports: the node's INT8 monitor against each shipped flavour's gate bounds."""
    watched = [
        {"flavour": g["flavour"], "file": g["file"], "min_agreement": g.get("min_agreement", NOT_RECORDED),
         "min_group_agreement": g["min_group_agreement"]}
        for g in gates if g.get("in_bundle") and g.get("passed")
    ]  # fmt: skip
    if not watched:
        return NOT_RECORDED
    return {
        "how": "omsf2 serve dicom --monitor FRACTION: on a share of the analysed images (chosen by a hash of the "
        "SOP Instance UID), the node runs this bundle's FP32 model.onnx beside the deployed INT8 file, off the "
        "result path",
        "figures": "rolling top-1 agreement and probability gaps over the last --monitor-window samples, for all "
        "images and per manufacturer, station name and modality",
        "drift_rule": "a group drifts when, with enough samples to judge, the upper end of the Wilson interval of "
        "its agreement lies below the bound: min_agreement for all images, min_group_agreement (min_agreement "
        "where it is off) per group; the node logs and audits int8_drift",
        "bounds": watched,
    }


def _software(meta: dict[str, Any], report: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    export = report.get("software") or {"omsf2": _nr(report.get("omsf2_version"))}
    train = training.get("software") or (
        {"omsf2": training["omsf2_version"]} if training.get("omsf2_version") else NOT_RECORDED
    )
    return {"training": train, "export": export, "bundle": {"omsf2": meta.get("omsf2_version")}}


def _card_link(link: dict[str, Any]) -> dict[str, Any]:
    """A trace link without its image lists (the manifest keeps them for ``omsf2 trace``)."""

    def slim(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "names"} for i in items]

    return {"step": link.get("step"), "input": slim(link.get("input") or []), "output": slim(link.get("output") or [])}


def build_card(meta: dict[str, Any], report: dict[str, Any], report_sha256: str) -> dict[str, Any]:
    """The card of a bundle whose manifest is ``meta`` (with its ``trace``), made from the export's ``report``.

    Args:
        meta: the bundle's manifest as written (everything but ``files``).
        report: the export's ``report.json``.
        report_sha256: the sha256 of that ``report.json`` (the card names its sources).
    """
    training = report.get("training") or {}
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "format_version": CARD_FORMAT_VERSION,
        "follows": list(FOLLOWS),
        "sources": {
            "manifest": "this bundle's manifest.json: name, version, intended use, classes, accepts, trace",
            "report_json_sha256": report_sha256,
            "checkpoint_sha256": _nr((report.get("checkpoint") or {}).get("sha256")),
            "checkpoint_facts": "copied by omsf2 export from the checkpoint into report.json (training)",
        },
        "model_details": _details(meta, report, training),
        "intended_use": {
            "intended_use": meta.get("intended_use"),
            "data_source": meta.get("data_source") or NOT_RECORDED,
            "accepts": meta.get("accepts"),
        },
        "training_data": _training_data(training),
        "recipe": _recipe(training),
        "evaluation": _evaluation(meta, report, training),
        "int8_gates": _gates(meta, report),
        "post_deployment_monitoring": NOT_RECORDED,  # filled below from the gates
        "software": _software(meta, report, training),
        "trace": [_card_link(link) for link in meta.get("trace") or []],
    }
    card["post_deployment_monitoring"] = _monitoring(card["int8_gates"])
    card["limitations"] = _limitations(meta, card)
    return card


def write_card(folder: str | Path, card: dict[str, Any]) -> None:
    """Write ``model_card.json`` and ``MODEL_CARD.md`` (rendered from that JSON) into ``folder``."""
    from omsf2.runtime.model_card_md import render_markdown

    text = json.dumps(card, indent=2, allow_nan=False) + "\n"
    Path(folder, CARD_JSON).write_text(text)
    Path(folder, CARD_MD).write_text(render_markdown(json.loads(text)))
