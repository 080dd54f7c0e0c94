"""The officer's touchscreen kiosk, served on 127.0.0.1 to Chromium in kiosk mode."""
