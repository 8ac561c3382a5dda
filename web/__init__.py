"""The Flask admin and log UI (a placeholder app factory until the web issue lands)."""
