"""`python -m kdcompile ...`, the same as the `kdcompile` command; torchrun starts it this way:
`torchrun --nproc-per-node 2 -m kdcompile distill teacher.pt`."""

from kdcompile.cli import main

main()
