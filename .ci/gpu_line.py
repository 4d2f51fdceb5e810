"""CI: the README's CUDA install line must end with exactly one FAISS build (issue 19).

The line cannot run here (no CUDA), so pip resolves it without installing (`pip install --dry-run --report`) in the
fresh CI environment, before any FAISS is installed; this reads that report.
"""

import json
import sys
from pathlib import Path

report = json.loads(Path(sys.argv[1]).read_text())
faiss = sorted(i["metadata"]["name"] for i in report["install"] if i["metadata"]["name"].startswith("faiss"))
if faiss != ["faiss-gpu-cu12"]:
    sys.exit(f"the CUDA install line resolves to FAISS builds {faiss}, not exactly faiss-gpu-cu12")
print(f"the CUDA install line resolves to one FAISS build: {faiss[0]}")
