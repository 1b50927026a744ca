"""``python -m omsf2``: the CLI, so that ``torchrun -m omsf2 train ...`` starts one training process per rank."""

from omsf2.cli.app import main

if __name__ == "__main__":
    main()
