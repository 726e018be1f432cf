"""Where the kit finds its templates and keeps its caches."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = Path(os.environ.get("KIT_TEMPLATES", REPO_ROOT / "templates"))
RECIPES_DIR = TEMPLATES_DIR / "recipes"
PROMPTS_DIR = TEMPLATES_DIR / "prompts"
CACHE_DIR = Path(os.environ.get("KIT_CACHE", Path.home() / ".cache" / "reczero-kit"))
