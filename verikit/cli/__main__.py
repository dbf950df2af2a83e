"""`python -m verikit.cli ...`, as the `verikit` command (VNN-COMP's scripts call it this way)."""
from verikit.cli import main

if __name__ == "__main__":
    main()
