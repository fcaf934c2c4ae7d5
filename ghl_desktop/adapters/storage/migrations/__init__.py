"""Alembic migrations, shipped inside the package and applied by ``open_database(migrate=True)``."""
