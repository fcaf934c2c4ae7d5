"""The panels of the main window, one module each, every one a standalone QWidget with explicit
constructor dependencies (the Cockpit, the ServiceBridge, the window's Tasks): ``locations``
(HighLevel locations, Connect HighLevel), ``numbers`` (WhatsApp numbers and their row actions),
``link`` (linking a number: QR code with countdown / pairing code), ``message_log`` (the message log
and its dead letters). ``base`` holds what they share: Tasks, panel frames, readable errors."""
