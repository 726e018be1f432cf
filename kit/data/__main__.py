import sys

from kit.data.prepare import main

sys.exit(main())
