"""Pure rules of the voucher programme: no Flask, no Session, no redis, no I/O."""
