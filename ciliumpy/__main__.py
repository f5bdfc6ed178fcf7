"""``python -m ciliumpy`` = the ``ciliumpy`` command."""

from ciliumpy.cli import main

main()
