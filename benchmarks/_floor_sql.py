"""The SQL of the real routes, as the floor app (benchmarks/floor_app.py) and pgbench run it.

A frozen copy of what one claim and one redemption send to PostgreSQL at the time of writing, read off
the running code with `python benchmarks/capture_sql.py` (psycopg placeholders instead of SQLAlchemy's):

- claim (POST /programs/{id}/claims): one transaction, RESERVE then ISSUE, one commit;
- redemption (POST /redemptions with an Idempotency-Key): INSERT_LEASE in its own transaction (with
  synchronous_commit off, inside the statement), then CHECKOUT_FACTS and REDEEM_IDEMPOTENT in a second
  one: two commits.

Frozen on purpose: the floor is a fixed yardstick, so ratio_floor before and after a change of the
routes compares the same thing. When a route's SQL changes for good, capture it again and update this
file (the benchmarks print commits and rows per request of route and floor side by side, so a floor
that no longer does the route's work shows).
"""

RESERVE = """
WITH counted AS (
    INSERT INTO holder_claim_counts AS h (program_id, holder_hash, claimed)
    VALUES (%(program_id)s, %(holder_hash)s, 1)
    ON CONFLICT (program_id, holder_hash) DO UPDATE SET claimed = h.claimed + 1
    WHERE h.claimed < %(per_person_limit)s
    RETURNING claimed
)
SELECT EXISTS (SELECT 1 FROM counted) AS counted,
       (SELECT v.id FROM vouchers v JOIN programs p ON p.id = v.program_id
        WHERE v.program_id = %(program_id)s AND v.tier_code = %(tier_code)s AND v.status = 'available'
          AND p.status = 'active' AND EXISTS (SELECT 1 FROM counted)
        LIMIT 1 FOR UPDATE OF v SKIP LOCKED) AS voucher_id
"""

ISSUE = """
WITH taken AS (
    UPDATE vouchers SET status = 'issued', holder_hash = %(holder_hash)s,
        claimed_by_merchant_id = %(merchant_id)s, claimed_at = %(now)s, valid_from = %(valid_from)s,
        expires_at = %(expires_at)s, kid = %(kid)s, token = %(token)s, status_changed_at = %(now)s
    WHERE id = %(voucher_id)s AND status = 'available'
    RETURNING id, program_id, tier_code, face_value_fen
), moved AS (
    INSERT INTO ledger_entries
        (program_id, voucher_id, kind, from_bucket, to_bucket, amount_fen, ref, created_at)
    SELECT program_id, id, 'claim', 'unclaimed', 'outstanding', face_value_fen, tier_code, %(now)s FROM taken
), audited AS (
    INSERT INTO audit_log (at, actor, action, entity, entity_id, data)
    SELECT %(now)s, %(actor)s, 'voucher.claimed', 'voucher', id, CAST(%(audit_data)s AS JSON) FROM taken
)
SELECT count(*) FROM taken
"""

INSERT_LEASE = """
INSERT INTO idempotency_records
    (merchant_id, key, route, request_sha256, state, locked_until, created_at)
SELECT %(merchant_id)s, %(key)s, %(route)s, %(request_sha256)s, 'in_progress', %(locked_until)s, %(created_at)s
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
ON CONFLICT (merchant_id, key) DO NOTHING
RETURNING 1
"""

CHECKOUT_FACTS = """
SELECT v.id, v.program_id, v.status, v.tier_code, v.face_value_fen, v.min_spend_fen, v.valid_from,
       v.expires_at, p.status AS program_status, p.channels AS program_channels, p.starts_at, p.ends_at,
       p.activated_at, p.eligibility, p.timezone, m.channels AS merchant_channels,
       (SELECT json_agg(json_build_array(g.gtin, c.certification_no, c.certification_type, c.county_code,
                                         c.valid_from, c.valid_to, c.status))
        FROM product_gtins g JOIN certified_products c ON c.certification_no = g.certification_no
        WHERE g.gtin = ANY(CAST(%(gtins)s AS varchar[]))) AS products
FROM vouchers v
JOIN programs p ON p.id = v.program_id
LEFT JOIN program_merchants e ON e.program_id = p.id AND e.merchant_id = %(merchant_id)s
LEFT JOIN merchants m ON m.id = e.merchant_id
WHERE v.id = %(voucher_id)s
"""

REDEEM_IDEMPOTENT = """
WITH finished AS (
    UPDATE idempotency_records SET state = 'done', response_status = %(response_status)s,
        response_body = %(response_body)s
    WHERE merchant_id = %(idem_merchant_id)s AND key = %(idem_key)s AND state = 'in_progress'
      AND locked_until = %(locked_until)s
    RETURNING 1
),
locked AS (
    SELECT id, status FROM vouchers
    WHERE id = %(voucher_id)s AND status = ANY(CAST(%(allowed)s AS varchar[])) AND expires_at > %(at)s
      AND recycled_at IS NULL AND EXISTS (SELECT 1 FROM finished)
    FOR UPDATE
), taken AS (
    UPDATE vouchers v SET status = 'redeemed', status_changed_at = %(now)s
    FROM locked WHERE v.id = locked.id
    RETURNING locked.status AS from_status
), redeemed AS (
    INSERT INTO redemptions (id, voucher_id, program_id, merchant_id, order_id, channel, terminal_id,
        order_total_fen, eligible_total_fen, discount_fen, clawed_back_fen, status, redeemed_at, receipt,
        source)
    SELECT %(redemption_id)s, %(voucher_id)s, %(program_id)s, %(merchant_id)s, %(order_id)s, %(channel)s, %(terminal_id)s,
        %(order_total_fen)s, %(eligible_total_fen)s, %(discount_fen)s, 0, 'active', %(at)s, %(receipt)s, %(source)s
    FROM taken
    RETURNING id
), lined AS (
    INSERT INTO redemption_lines (redemption_id, "index", gtin, sku, name, quantity, unit_price_fen,
        line_total_fen, eligible, reason, certification_no, county_code, discount_share_fen,
        returned_quantity)
    SELECT r.id, l."index", l.gtin, l.sku, l.name, l.quantity, l.unit_price_fen, l.line_total_fen,
        l.eligible, l.reason, l.certification_no, l.county_code, l.discount_share_fen, 0
    FROM redeemed r CROSS JOIN json_to_recordset(CAST(%(lines)s AS json)) AS l("index" int, gtin text,
        sku text, name text, quantity int, unit_price_fen bigint, line_total_fen bigint, eligible boolean,
        reason text, certification_no text, county_code text, discount_share_fen bigint)
), revoked AS (
    INSERT INTO revocation_events (program_id, voucher_id, kind, created_at)
    SELECT %(program_id)s, %(voucher_id)s, 'redeemed', %(now)s FROM redeemed
), moved AS (
    INSERT INTO ledger_entries
        (program_id, voucher_id, kind, from_bucket, to_bucket, amount_fen, ref, created_at)
    SELECT %(program_id)s, %(voucher_id)s, 'redeem',
        CASE taken.from_status WHEN 'issued' THEN 'outstanding' ELSE 'expired' END, 'redeemed',
        %(discount_fen)s, redeemed.id, %(now)s
    FROM taken CROSS JOIN redeemed
), audited AS (
    INSERT INTO audit_log (at, actor, action, entity, entity_id, data)
    SELECT %(now)s, %(actor)s, 'redemption.created', 'redemption', redeemed.id, CAST(%(audit_data)s AS JSON)
    FROM redeemed
)

SELECT EXISTS (SELECT 1 FROM finished) AS finished, (SELECT from_status FROM taken) AS from_status
"""
