"""The subscriber store: lists, subscribers, suppression, history and the delivery ledger.

``db`` opens the database and migrates it, ``schema`` holds the current tables and
``migrations`` the numbered steps that build them; ``subscribers`` is the domain API,
``importer`` and ``export`` move subscribers in and out as CSV, and ``normalise`` holds the
rules for what may enter (addresses, names, languages, attributes) that every way in shares.
Nothing here renders mail or imports click.
"""
