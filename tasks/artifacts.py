"""Charts as Prefect image artifacts."""

from __future__ import annotations

import base64
from pathlib import Path

from prefect.artifacts import create_image_artifact


def publish_chart(path: str | Path, key: str, description: str) -> bool:
    """The PNG at ``path`` as an image artifact, inlined as a data: URL so that the UI shows it with
    nothing else to reach (the chart lives on the worker). False, and nothing published, when there
    is no such file."""
    path = Path(path)
    if not path.is_file():
        return False
    create_image_artifact(image_url="data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(),
                          key=key, description=description)
    return True
