"""Send exactly one order-confirmation email per order: SQS -> claim -> SES SendEmail -> SENT.

Runs as the Lambda module `index` (embedded as ZipFile code), so stdlib + boto3 only. DESIGN.md
("Idempotency") explains the claim: a conditional write makes one invocation the only one allowed
to send an order's email, and the deterministic `messageId` makes every redelivery hit that item.
Metrics are CloudWatch Embedded Metric Format log lines, never PutMetricData calls.

Size matters: `infra/code.py` embeds this file in the template without comments and docstrings,
and `aws cloudformation deploy` takes at most 51,200 bytes of template inline. So the prose lives
in comments (free) and the code spends few tokens: one table of field rules and one generic
checker, short reasons, `#placeholders` in DynamoDB expressions only for reserved words (status,
timestamp, to, ttl, error), literals in single quotes (JSON escapes every `"`), one-line guards,
short names in short scopes.
"""

import base64, boto3, collections, datetime, decimal, html, json, os, re, time, uuid
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config

ENV = os.environ
TABLE = ENV['EMAIL_DELIVERIES_TABLE']
FROM_ADDRESS = ENV['SES_FROM_ADDRESS']
CONFIG_SET = ENV['SES_CONFIG_SET']
# Only the word "true" (any case) sends to customers: a typo fails safe, into the sandbox.
PRODUCTION = ENV.get('ENABLE_PRODUCTION_SES', '').strip().lower() == 'true'
TEST_ADDRESS = ENV.get('TEST_EMAIL_ADDRESS')
NAMESPACE = ENV['METRICS_NAMESPACE']  # <env>/EmailNotifications, set by the template
TTL_SECONDS = int(ENV['RECORD_TTL_DAYS']) * 86400

# Module level: created once per container, reused by every invocation. DynamoDB: standard
# retries, 4 attempts in all (the contract's `max_attempts: 3` retries). SES: ONE attempt
# (`total_max_attempts`; botocore's `max_attempts` counts retries, so `max_attempts: 1` would
# still resend once): a SendEmail resent after a read timeout could deliver a second email. The
# queue retries instead, guarded by the claim.
serialize = TypeSerializer().serialize  # Python values -> DynamoDB attribute values
ses, dynamodb = (
    boto3.client(name, config=Config(
        retries={'mode': 'standard', 'total_max_attempts': n}, connect_timeout=2, read_timeout=5))
    for name, n in (('ses', 1), ('dynamodb', 4))
)


# The message breaks the order contract; the text is "<field>: <rule it breaks>", never the value
# (no PII, no log injection).
class InvalidOrder(ValueError): pass


def need(ok, reason):
    """Raise InvalidOrder(reason) unless `ok`."""
    if not ok: raise InvalidOrder(reason)


# A decimal string, never a JSON number (float rounding).
PRICE = 200, re.compile(r'(?a)\d{1,9}(\.\d\d?)?').fullmatch, 'not a price like 9.99'

# The rules of an order's string fields: field -> (max characters, rule, what a value breaking
# the rule is). A rule returns something truthy for a good value (or raises ValueError). Any
# other field is text of at most 200 characters.
RULES = {
    # Its SES tag is base64url of the UTF-8 bytes, at most 256 characters: 192 bytes.
    'orderId': (128, lambda v: len(v.encode()) < 193, 'over 192 bytes'),
    # RFC 5322 dot-atom (no leading, trailing or double dot; local part <= 64) @ LDH labels (no
    # leading or trailing hyphen) with a letter TLD; RFC 5321 caps the whole at 254. ASCII only
    # (SendEmail needs non-ASCII addresses encoded). No display name, quotes, comma or space: one
    # address.
    'customerEmail': (254, re.compile(
        r"(?ai)(?!\.|.*\.[.@])[\w!#$%&'*+/=?^`{|}~.-]{1,64}@([a-z\d]([a-z\d-]*[a-z\d])?\.)+[a-z]{2,}"
    ).fullmatch, 'not one plain address'),
    'unitPrice': PRICE,
    'total': PRICE,
    'currency': (200, re.compile('[A-Z]{3}').fullmatch, 'not a code like USD'),
    'orderDate': (200, datetime.datetime.fromisoformat, 'not an ISO-8601 date')
}
OPTIONAL = 'total', 'currency', 'orderDate'


def check(obj, key, at=''):
    """Raise InvalidOrder if `obj[key]` breaks its rule (RULES); an optional field may be absent.
    `at` locates `obj` in the order for the reason (`items[2].`)."""
    v = obj.get(key)
    limit, rule, broken = RULES.get(key, (200, str, ''))
    try:
        # In this order, so that the rule only ever sees a short single-line string.
        why = (
            key not in OPTIONAL and 'missing' if v is None
            else 'not a string' if type(v) is not str
            else 'empty' if not v.strip()
            else f'over {limit} chars' if len(v) > limit
            # C0/C1 controls (CR/LF: header injection), line/paragraph separators, bidi
            # overrides and isolates, lone surrogates. Not str.isprintable(): that also refuses
            # ZWJ/ZWNJ, which names need.
            else 'control characters' if re.search(
                '[\0-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069\ud800-\udfff]', v)
            else not rule(v) and broken
        )
    except ValueError: why = broken  # datetime.fromisoformat: an impossible date, e.g. 2026-13-45
    need(not why, f'{at}{key}: {why}')


def parse_order(body, label='body'):
    """The validated order in an SQS record body: raw JSON, or an SNS envelope around it.

    DESIGN.md "Order message": orderId, customerEmail, customerName required; items, total,
    currency, orderDate optional. Raises InvalidOrder naming the first broken rule. No limit on
    the body itself: every field has one (and there are at most 100 items); others are ignored.
    """
    try: o = json.loads(body)
    # A Message that is not a string; not JSON; absurdly nested JSON.
    except (TypeError, ValueError, RecursionError): raise InvalidOrder(label + ': not JSON text')
    if type(o) is dict and o.get('Type') == 'Notification':
        return parse_order(o.get('Message'), 'SNS Message')
    need(type(o) is dict, 'order: not a JSON object')
    for key in 'orderId', 'customerEmail', 'customerName', *OPTIONAL: check(o, key)
    items = o.get('items') or []  # null or empty: no items
    need(type(items) is list and len(items) <= 100, 'items: not an array of <= 100')
    for i, x in enumerate(items):
        at = f'items[{i}]'
        need(type(x) is dict, at + ': not an object')
        q = x.get('quantity')
        # type(), not isinstance(): JSON true is a bool, and bool is an int subclass.
        need(type(q) is int and 0 < q <= 10000, at + '.quantity: not an integer 1-10000')
        for key in 'name', 'unitPrice': check(x, key, at + '.')
    return o


def render_email(o, sandbox):
    """(subject, html, text) of a validated order `o`; every value is HTML-escaped in the HTML
    part. Both parts hold the same lines. Money is Decimal from the decimal strings, never float:
    3 x 0.10 must print 0.30."""
    def money(a): return f'{a:,.2f} {o.get("currency") or ""}'.rstrip()

    # The text part, filled from the order with format_map (braces in a value are not expanded;
    # no value holds a line break: see check). The test inbox belongs to the operator: naming the
    # real recipient there is fine.
    text = ('Test mode: addressed to {customerEmail}.\n' * sandbox
            + 'Hello {customerName},\nThank you for your order {orderId}.').format_map(o)
    if d := o.get('orderDate'):
        text += format(datetime.datetime.fromisoformat(d), '\nOrder date: %d %B %Y')
    for i in o.get('items') or ():
        p, q = decimal.Decimal(i['unitPrice']), i['quantity']
        text += f'\n{i["name"]} x {q} at {money(p)} = {money(p * q)}'
    if t := o.get('total'): text += '\nTotal: ' + money(decimal.Decimal(t))
    return (
        '[Redirected test] ' * sandbox + 'Your order {orderId} is confirmed'.format_map(o),
        # The HTML part: the same lines, escaped, one paragraph each (HTML5 lets a paragraph end
        # where the next one starts).
        '<!DOCTYPE html><p>' + html.escape(text).replace('\n', '<p>'),
        text)


def message_id_for(order_id):
    """The item's range key: deterministic per order and email kind, so redeliveries collide."""
    return 'order-confirmation'


def mask_email(address):
    """`ada@example.com` -> `a***@example.com`: logs never hold a full address."""
    return re.sub('(?<=.)[^@]*(?=@)', '***', str(address), 1)


def error_code(error):
    """The AWS error code of a ClientError, else the exception's class name (some botocore errors
    have a `response` of None)."""
    return ((getattr(error, 'response', 0) or {}).get('Error', {}).get('Code')
            or type(error).__name__)


def process_record(record, context, metrics, log):
    """Validate, claim, send and record one SQS record; returns its outcome: sent, duplicate,
    failed (SES refused it for good) or retry. Raises InvalidOrder for a bad message. `log`
    collects the record's log fields: the caller writes ONE log line per record."""
    order = parse_order(record['body'])
    oid, to = order['orderId'], order['customerEmail']
    rcpt = to if PRODUCTION else TEST_ADDRESS  # the actual recipient
    log.update(orderId=oid, to=mask_email(to), sentTo=mask_email(rcpt))
    if not rcpt:
        log['reason'] = 'no TEST_EMAIL_ADDRESS'
        return 'retry'
    # Rendered before the claim: a rendering bug leaves no claim behind.
    # subject, html, text: UTF-8, as SES needs it for anything not 7-bit ASCII.
    s, h, t = ({'Data': p, 'Charset': 'UTF-8'} for p in render_email(order, not PRODUCTION))
    key = {'orderId': {'S': oid}, 'messageId': {'S': message_id_for(oid)}}
    token = uuid.uuid4().hex

    def write(event, detail, status, sets, cond='claimToken=:token AND #status=:sending', life=0,
              **more):
        """One conditional UpdateItem: sets `status` (and `timestamp`, the GSI range key), sets the
        claim to expire in `life` seconds (0: the claim ends now) and appends `event` to the
        `events` history; by default only while this attempt holds the claim (its token, and SES
        feedback did not move the status on). Returns None, or on a failed condition the item as
        it was (ALL_OLD, no extra read). `#name` placeholders map to that attribute; only the
        `:values` the expressions use are sent (DynamoDB rejects unused ones)."""
        # 2026-11-27T12:00:00Z (%F %T: glibc, as on Lambda)
        iso = time.strftime('%FT%TZ', time.gmtime(now := int(time.time())))
        values = dict(more, now=now, iso=iso, status=status, token=token, sending='SENDING', to=to,
                      sentTo=rcpt, ttl=now + TTL_SECONDS, expires=now + life, one=1, empty=[],
                      event=[{'type': event, 'time': iso, 'detail': detail}])
        sets = ('SET events=list_append(if_not_exists(events,:empty),:event),#status=:status,'
                '#timestamp=:now,updatedAt=:iso,claimExpiresAt=:expires,' + sets)
        used = sets + ' ' + cond
        try:
            dynamodb.update_item(
                TableName=TABLE, Key=key, UpdateExpression=sets, ConditionExpression=cond,
                ExpressionAttributeNames=dict(re.findall(r'(#(\w+))', used)),
                ExpressionAttributeValues={n: serialize(values[n[1:]])
                                           for n in re.findall(r':\w+', used)},
                ReturnValuesOnConditionCheckFailure='ALL_OLD')
        except Exception as e:
            # Only a failed condition returns the item (ALL_OLD); any other error propagates.
            if 'Item' in (getattr(e, 'response', 0) or ()): return e.response['Item']
            raise

    # Create the item SENDING, or take over a SENDING item whose claim expired or was released
    # (its holder died or failed). Any other item: the order was handled (or is being handled:
    # if that holder fails, its own message is retried). Other errors: retried (no claim taken,
    # or one that expires before the retry). The claim outlives the invocation (remaining time +
    # 10 s) but never the queue's visibility timeout (180 s), so the retry of a message whose
    # invocation died can take over.
    old = write(
        'Claimed', context.aws_request_id, 'SENDING',
        '#to=:to,sentTo=:sentTo,createdAt=if_not_exists(createdAt,:iso),'
        '#ttl=if_not_exists(#ttl,:ttl),claimToken=:token ADD attempts :one',
        'attribute_not_exists(orderId) OR #status=:sending AND claimExpiresAt<=:now',
        min(context.get_remaining_time_in_millis() // 1000 + 10, 180))
    # Our own token: botocore resent the claim after a timeout although the first attempt had
    # succeeded, and the resend failed its condition on the item we wrote. The claim is ours.
    if old and old.get('claimToken') != {'S': token}:
        metrics['DuplicatesSkipped'] += 1
        log['existingStatus'] = old['status']['S']
        return 'duplicate'

    t0 = time.perf_counter()
    try:
        ses_id = log['sesMessageId'] = ses.send_email(
            Source=FROM_ADDRESS,
            Destination={'ToAddresses': [rcpt]},
            Message={'Subject': s, 'Body': {'Html': h, 'Text': t}},
            ConfigurationSetName=CONFIG_SET,
            # The feedback processor finds the item from these (`mail.tags` of every SES event).
            # SES tags allow only A-Z a-z 0-9 _ -: base64url without padding is that alphabet.
            Tags=[
                {'Name': n, 'Value': base64.urlsafe_b64encode(v['S'].encode()).decode().rstrip('=')}
                for n, v in key.items()]
        )['MessageId']
    except Exception as e:
        metrics['SendFailures'] += 1
        code = log['error'] = error_code(e)
        # Group 1: SES refused this email for good (a retry would be refused again): record
        # FAILED and acknowledge. The rest: SES definitely did not take the email (throttled or
        # over a quota; the account or the configuration set paused or missing: not the order's
        # fault, the DLQ keeps the order for a redrive once the operator fixed the account; no
        # connection before the request was sent): release the claim (SENDING, expiring now)
        # so that the retry sends at once.
        kind = re.search('(Rejected|NotVerified|InvalidParam)|Thrott|Exceeded|Paused|DoesNotExist|'
                         'Endpoint|ConnectTimeout', code)
        # No match (read timeout, connection closed, another BotoCoreError, 5xx, unknown codes):
        # ambiguous, SES may have accepted the email, so the claim is kept. The retry comes after
        # the visibility timeout, when the claim has expired and, if SES did accept, the SES Send
        # event has set SENT: the retry then skips as a duplicate.
        if not kind: return 'retry'
        event, status, outcome = (
            ('Failed', 'FAILED', 'failed') if kind[1] else ('Released', 'SENDING', 'retry'))
        # If this write fails, the record is retried (lambda_handler logs it as `writeError`): the
        # claim expires before the retry, or the DLQ keeps the order.
        write(event, code, status, '#error=:error', error=f'{code}: {e}'[:500])
        return outcome

    # SES accepted the email: from here on, nothing may lead to a second send.
    metrics.setdefault('SendLatency', []).append((time.perf_counter() - t0) * 1000)
    metrics['EmailsSent'] += 1
    # A failed condition is fine: SES feedback (Send/Delivery) got there first and ranks higher,
    # or botocore resent a write that had succeeded. Any other error: acknowledge anyway (the SES
    # Send event sets SENT moments later, through the feedback processor), count and log it.
    try: write('Accepted', ses_id, 'SENT', 'sesMessageId=:id', id=ses_id)
    except Exception as e:
        metrics['RecordFailures'] += 1
        log.update(level='ERROR', writeError=error_code(e))
    return 'sent'


def lambda_handler(event, context):
    """SQS batch -> {"batchItemFailures": [...]}: only the failed records are retried."""
    metrics = collections.Counter()
    failures = []
    for r in event['Records']:
        log = {'sqsMessageId': r['messageId']}
        try: outcome = process_record(r, context, metrics, log)
        except InvalidOrder as e:
            metrics['InvalidMessages'] += 1
            outcome, log['reason'] = 'invalid', str(e)
        except Exception as e:  # one broken record never fails the batch
            # After a failed send (`error` set), this is the write that recorded it.
            outcome, log['writeError' if 'error' in log else 'error'] = 'retry', error_code(e)
        retry = outcome in ('invalid', 'retry')  # then the DLQ
        print(json.dumps({
            'level': log.pop('level',
                             'WARNING' if retry else 'ERROR' if outcome == 'failed' else 'INFO'),
            'message': 'Order ' + outcome, 'outcome': outcome, **log}))
        failures += [{'itemIdentifier': r['messageId']}] * retry
    if metrics:
        # ONE EMF line per invocation, only non-zero metrics (each is billed per hour published),
        # no dimensions (each combination is a separately billed metric).
        print(json.dumps({'_aws': {'Timestamp': int(time.time() * 1000), 'CloudWatchMetrics': [{
            'Namespace': NAMESPACE, 'Dimensions': [[]], 'Metrics': [
                {'Name': n, 'Unit': 'Milliseconds' if n == 'SendLatency' else 'Count'}
                for n in metrics]}]}, **metrics}))
    return {'batchItemFailures': failures}
