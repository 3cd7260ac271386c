"""`python -m emulator` is the `foundry-emulator` command."""

from .cli import main

raise SystemExit(main())
