"""The outside world behind small interfaces: database, signing, QR, Redis, SMS."""
