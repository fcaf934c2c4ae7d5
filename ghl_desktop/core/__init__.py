"""The pure heart of ghl-desktop: domain types, ports, errors and conversions.

Standard library only. Nothing in here may import PySide6, httpx, sqlalchemy, aiohttp or neonize
(an import-linter contract and tests/test_architecture.py hold that line).
"""
