"""Small example extensions that the registry and discovery tests import (good and broken)."""
