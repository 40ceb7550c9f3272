"""``python -m lorafit`` runs the CLI (also under ``torchrun`` / ``accelerate launch``)."""
from lorafit.cli import main

if __name__ == "__main__":
    main()
