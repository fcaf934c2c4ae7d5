"""The panels of the main window, one module each: ``locations`` (HighLevel locations, Connect
HighLevel), ``sessions`` (WhatsApp numbers and the linking area: QR code / pairing code),
``message_log`` (the message log and its dead letters). ``base`` holds what they share: the window's
tasks, row buttons, panel frames and status labels.

Each panel is a mixin of :class:`~ghl_desktop.ui.main_window.MainWindow` over :class:`PanelBase`: it
builds its widgets as attributes of the window and runs its actions as the window's tasks; the window
composes the panels (menu, status bar, banners, shutdown)."""
