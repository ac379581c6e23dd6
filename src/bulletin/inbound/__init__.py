"""Mail that comes back: bounces, spam complaints and mailto unsubscribes.

Reads a Maildir folder, an mbox file or a single message (:mod:`.mailboxes`), works out what
each message says (:mod:`.reports`: delivery status notifications, feedback reports,
auto-replies) and whom it is about (:mod:`.addresses`: signed tokens in VERP and
plus-addresses), then records the outcome in the subscriber store (:mod:`.bounces`,
:mod:`.unsubscribes`). The store knows nothing of mail; this package calls it.
"""
