from ghl_desktop.cli import main

raise SystemExit(main())
