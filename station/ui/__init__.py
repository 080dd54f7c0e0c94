"""The officer's kiosk: server-rendered pages (Jinja2 + htmx) served by the station service.

Layering: page routes (``station.ui.pages``) render templates from what the station API
answers; they reach the API in-process through :class:`station.ui.client.StationApi`, so
the UI holds no workflow logic and sees exactly what any other client would. Strings are
English msgids translated through gettext catalogs (``locale/vi/*.po``); Vietnamese is the
default language.
"""
