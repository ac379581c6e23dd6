"""Joining a list: consent texts, sign-ups with double opt-in, confirmation, preferences.

The web app (:mod:`bulletin.web.public`) and the commands call this package; it composes
the confirmation and welcome mails (:mod:`bulletin.signup.mail`) and keeps its rows through
the store (:mod:`bulletin.store.signups`, :mod:`bulletin.store.consent`).
"""
