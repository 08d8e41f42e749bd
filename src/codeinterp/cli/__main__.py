from codeinterp.cli import main

raise SystemExit(main())
