"""The kiosk's screens: one module per screen or group of screens, each exporting
``router`` (FastAPI APIRouter); :func:`station.ui.app.install_ui` mounts them all."""
