"""``python -m sotalign``: the ``sotalign`` command, for environments where its script is not on PATH.

The command lives in ``orchestrator/`` (it launches Ray and MLflow); this entry only hands over to it,
so the library itself still imports neither."""

import sys

from orchestrator.cli import main

sys.exit(main())
