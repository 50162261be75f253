"""The budget's buckets and which one a voucher's value sits in: the books' rules, used by every write path."""

from __future__ import annotations

BUCKETS = ("unallocated", "unclaimed", "outstanding", "redeemed", "expired", "void")

# A claim moves the face value from the tier's unclaimed budget to the holder's outstanding one.
CLAIM_MOVE = ("unclaimed", "outstanding")

# Which bucket a voucher's face value sits in, by the status it is redeemed from (only these may be).
BUCKET_OF_REDEEMABLE_STATUS = {"issued": "outstanding", "expired": "expired"}
