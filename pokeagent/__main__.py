from pokeagent.cli import main

raise SystemExit(main())
