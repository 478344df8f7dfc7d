from tiqu.cli import main

raise SystemExit(main())
