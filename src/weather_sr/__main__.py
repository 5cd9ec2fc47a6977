from weather_sr.cli import main

raise SystemExit(main())
