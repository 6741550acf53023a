"""SES feedback processor: records every SES event of an order-confirmation email in DynamoDB.

Input: SQS records whose body is an SES event-publishing record (`eventType`) or an older identity
notification (`notificationType`), raw or inside an SNS envelope. The item is found from the
message tags the sender set (`orderId`, `messageId`: base64url, padding stripped); an event for an
email this system did not send never creates an item. The status only moves up the rank in
DESIGN.md (conditional update, so out-of-order events are harmless), and every distinct event is
appended to `events` once (its key is kept in `eventIds`: SNS and SQS deliver at least once).

Per record, one outcome, logged as one JSON line (`outcome`, `reason`):
- acknowledged: applied (the status moved up), recorded (history only: a lower or equal rank, or
  an engagement event), duplicate, history_full (engagement cap reached), ignored (SES setup
  notice), unmatched (tags missing or undecodable, or no item: counted as `UnmatchedFeedback`);
- batch item failures, so SQS retries them: malformed (not an SES record we know: retrying cannot
  fix it, so after the retries it reaches the DLQ intact), retry (DynamoDB, network or any
  unexpected error; the reason names the exception).
Metrics count distinct events, not status changes: a Bounce after a Complaint still counts in
`Bounces`, which is what the Bounces / EmailsSent alarm needs. Duplicates are not counted.

AWS calls: DynamoDB UpdateItem only. A status event first tries to apply its status and append
itself in one conditional write (the common case: one write); if its rank is not higher, a second
conditional write appends it to the history only. ReturnValuesOnConditionCheckFailure=ALL_OLD
tells "no such item", "already recorded" and "lower rank" apart without a read.

Why the code is compact: it is embedded in the template (`infra/code.py` strips comments,
docstrings and optional whitespace), and the template must stay under the 51,200 bytes that
`aws cloudformation deploy` accepts inline. Comments and docstrings are free; every token costs.
"""

import base64, hashlib, json, os, re, time, boto3, botocore.config

# Both set by the template. Required: a missing one fails every record (so the records wait in
# the queue and then the DLQ) instead of dropping them.
TABLE = os.environ['EMAIL_DELIVERIES_TABLE']
NAMESPACE = os.environ['METRICS_NAMESPACE']

# SES publishes the plain text 'Successfully validated SNS topic for Amazon SES event publishing.'
# when an event destination is (re)created: not an error. Matched by its start.
SETUP_NOTICE = 'Successfully validated SNS topic'

DYNAMODB = boto3.client('dynamodb', config=botocore.config.Config(
    retries={'mode': 'standard', 'max_attempts': 3}, connect_timeout=1, read_timeout=2))

# Status rank (DESIGN.md): a status only moves up; an equal rank does not replace.
RANK = dict(SENDING=1, SENT=2, DELAYED=3, DELIVERED=4, FAILED=5, REJECTED=5, RENDERING_FAILED=5,
            BOUNCED=5, COMPLAINED=6)
# event type -> 'status metric object': the status it sets, the metric it counts, and the object
# that holds its data when that is not named after the type (Bounce: bounce, DeliveryDelay:
# deliveryDelay). Open, Click and Subscription set no status and count nothing (engagement:
# history only, capped). A type that counts a metric must carry its object (it holds the facts
# counted); the others may come without one.
KINDS = {
    'Bounce': 'BOUNCED Bounces',  # the first three: also identity notifications (below)
    'Complaint': 'COMPLAINED Complaints',
    'Delivery': 'DELIVERED Deliveries',
    'Send': 'SENT',
    'DeliveryDelay': 'DELAYED DeliveryDelays',
    'Reject': 'REJECTED Rejects',
    'Rendering Failure': 'RENDERING_FAILED RenderingFailures failure',
    'Open': '', 'Click': '', 'Subscription': '',
}
# Identity notifications exist for Bounce, Complaint and Delivery only (KINDS lists them first).
# They carry no custom tags, so they stay unmatched unless tagged: the configuration set's event
# destinations are the primary path.
NOTIFICATION_KINDS = [*KINDS][:3]
# Facts copied from the event's object: 'attribute=path', or 'attribute' when the path is the
# same name; digits in a path index a list. Each object carries only its own type's facts. The
# texts found, '/'-joined, are the history entry's detail; those with an attribute name are also
# set on the item with the status (failure details).
FIELDS = ('bounceType bounceSubType diagnostic=bouncedRecipients.0.diagnosticCode'
          ' complaintFeedbackType error=reason error=errorMessage =delayType').split()
KEY = 'orderId', 'messageId'  # the table key, read back from the message tags of these names

# Update expressions. Placeholders: :k the event's key, :i the same as a string set, :e the history
# entry, :n an empty list, :c the history cap, :s the SES message id, :now/:iso the time; `#x` for
# the reserved words (status, timestamp, error) and the failure attributes.
# Append the entry and its key, only to an existing item (an event never creates one) that does
# not hold the event yet and whose history is shorter than :c. Open/Click can repeat without
# bound: their :c is 50, so an item stays far below DynamoDB's 400 KB; status events never reach
# their :c (99999).
HISTORY = ('ADD eventIds :i SET updatedAt=:iso,'
           'events=list_append(if_not_exists(events,:n),:e)')
NEW_EVENT = ('attribute_exists(orderId) AND NOT contains(eventIds,:k)'
             ' AND (attribute_not_exists(events) OR size(events)<:c)')
# With the status, if it ranks higher (`IN` the lower statuses): keep the sender's SES message id,
# the failure attributes follow, and the claim ends (any SES event means SES took the email).
APPLY = HISTORY + ',#status=:status,#timestamp=:now,sesMessageId=if_not_exists(sesMessageId,:s)'



# The exception's class names the record's outcome and gives its log level; an ERROR record is a
# batch item failure.
class Malformed(Exception): level = 'ERROR'  # not an SES record we know: it must reach the DLQ
class Unmatched(Exception): level = 'WARNING'  # not an email we sent (or still have): acknowledged
class Ignored(Exception): level = 'INFO'  # an SES setup notice: nothing to record


def log(**line):
    """Print one JSON line (a log line or an EMF record), every e-mail address in it (SES
    diagnostics quote them) masked as `a***@example.com`."""
    print(re.sub(r'(\w)[\w.+-]*@', r'\1***@', json.dumps(line)))


def parse(text, what='body'):
    """The SES record in `text`, the SQS body or the Message of an SNS envelope in it."""
    try: doc = {**json.loads(text)}  # TypeError unless a JSON object
    except Exception:  # not a string, not JSON (ValueError, RecursionError), not an object
        if str(text).startswith(SETUP_NOTICE): raise Ignored(text)
        raise Malformed(what + ' not a JSON object')
    # SQS's limit: a larger body did not come through SNS/SQS.
    if len(text.encode()) > 262144: raise Malformed(what + ' over 256 KB')
    return parse(doc['Message'], 'SNS Message') if 'Message' in doc else doc  # an SNS envelope


def pick(obj, path):
    """The text at the dotted `path` in `obj` (digits index a list), at most 500 characters (a
    diagnostic can be long); '' if there is none or it is not a string."""
    for step in path.split('.'):
        try: obj = obj[int(step) if step.isdigit() else step]
        except Exception: return ''
    return obj[:500] if type(obj) is str else ''


def tag(doc, name):
    """The value the sender put in the tag `name` (`mail.tags`: name -> list of values); Unmatched
    when it is missing or undecodable: not base64url, not UTF-8, or not exactly the sender's
    encoding (padding stripped)."""
    value = pick(doc, f'mail.tags.{name}.0')
    try:
        text = base64.b64decode(value + '==', b'-_').decode()  # lenient: the round trip checks
        if text and base64.b64encode(text.encode(), b'-_').decode().rstrip('=') == value:
            return text
    except Exception: pass
    raise Unmatched(f'tag {name} ' + ('undecodable' if value else 'missing'))


def update(key, expression, condition, values, names=()):
    """A conditional UpdateItem: None if applied, else the item as it was; Unmatched if there is
    no item (every write requires one: nothing is ever created)."""
    extra = {'ExpressionAttributeNames': {'#' + n: n for n in names}} if names else {}
    try:
        DYNAMODB.update_item(
            TableName=TABLE, Key=key, UpdateExpression=expression, ConditionExpression=condition,
            ExpressionAttributeValues=values, ReturnValuesOnConditionCheckFailure='ALL_OLD',
            **extra)
    except DYNAMODB.exceptions.ConditionalCheckFailedException as error:
        old = error.response.get('Item')
        if old: return old
        raise Unmatched('no item')  # for these tags


def record(key, status, eid, values, facts, ses_id):
    """Apply the event's status (if it ranks higher) and append it to the history; returns the
    outcome: applied, recorded, duplicate or history_full."""
    if status:
        lower = {':' + s: {'S': s} for s in RANK if RANK[s] < RANK[status]}
        sets = {a: v for a, v in facts if a and v}  # the failure attributes
        old = update(
            key, APPLY + ''.join(f',#{a}=:{a}' for a in sets) + ' REMOVE claimExpiresAt',
            NEW_EVENT + ' AND #status IN(' + ','.join(lower) + ')',
            values | lower | {':status': {'S': status}, ':now': {'N': '%d' % time.time()},
                              ':s': {'S': ses_id}} | {':' + a: {'S': v} for a, v in sets.items()},
            ['status', 'timestamp', *sets])
        if not old: return 'applied'
        if eid in old.get('eventIds', {}).get('SS', ()): return 'duplicate'
    old = update(key, HISTORY, NEW_EVENT, values)  # a lower or equal rank, or engagement
    if not old: return 'recorded'
    return 'duplicate' if eid in old.get('eventIds', {}).get('SS', ()) else 'history_full'


def process_record(sqs_record, metrics):
    """Handle one SQS record, adding the names of the metrics it counts to `metrics`; returns its
    log level (ERROR: a batch item failure)."""
    info, level = {'message': 'feedback', 'sqsMessageId': sqs_record.get('messageId')}, 'INFO'
    try:
        doc = parse(sqs_record.get('body'))
        kind = doc.get('eventType', doc.get('notificationType'))
        if kind == 'AmazonSnsSubscriptionSucceeded': raise Ignored(kind)
        if type(kind) is not str or kind not in (
                KINDS if 'eventType' in doc else NOTIFICATION_KINDS):
            raise Malformed(f'unknown event type {kind!r}')
        ses_id = pick(doc, 'mail.messageId')
        if not ses_id: raise Malformed('mail.messageId missing')
        status, metric, holder = (KINDS[kind] + '  ').split(' ')[:3]  # '' for none
        data = doc.get(holder or kind[0].lower() + kind[1:], None if metric else {})
        if type(data) is not dict: raise Malformed(f'no {kind} object')
        info.update(eventType=kind, sesMessageId=ses_id, **{n: tag(doc, n) for n in KEY})
        facts = [(a, pick(data, path or a)) for a, _, path in (f.partition('=') for f in FIELDS)]
        info['detail'] = '/'.join(v for _, v in facts if v) or kind
        # The event's key: SNS/SQS duplicates are identical copies (the same JSON, so the same
        # dict); two real events of one email differ in their object (timestamp, recipients,
        # feedback id).
        eid = hashlib.md5(str(doc).encode()).hexdigest()  # a dedup key, not security
        now = time.strftime('%FT%TZ', time.gmtime())
        when = pick(data, 'timestamp') or pick(doc, 'mail.timestamp')
        entry = {'type': {'S': kind}, 'time': {'S': when}, 'detail': {'S': info['detail']}}
        outcome = record({n: {'S': info[n]} for n in KEY}, status, eid, {
            ':k': {'S': eid}, ':i': {'SS': [eid]}, ':n': {'L': []}, ':e': {'L': [{'M': entry}]},
            ':c': {'N': '99999' if status else '50'}, ':iso': {'S': now}}, facts, ses_id)
        if metric and outcome != 'duplicate':  # each event counted once
            metrics += [metric] + ['HardBounces'] * (facts[0][1] == 'Permanent')  # bounceType
    except Exception as error:  # ours have a level; any other (DynamoDB, network, a bug) retries
        if hasattr(error, 'level'):
            outcome, level, info['reason'] = type(error).__name__.lower(), error.level, str(error)
        else:
            outcome, level, info['reason'] = 'retry', 'ERROR', repr(error)
    if outcome == 'unmatched': metrics += ['UnmatchedFeedback']
    log(level=level, outcome=outcome, **info)
    return level


def lambda_handler(event, context):
    """SQS batch in, partial batch failures out, one EMF line for the whole batch."""
    records, metrics = event.get('Records'), []
    if not records: log(level='WARNING', message='no records in event', outcome='empty')
    failures = [{'itemIdentifier': r['messageId']} for r in records or ()
                if process_record(r, metrics) == 'ERROR']
    # CloudWatch Embedded Metric Format: non-zero counts only, no dimensions.
    counts = {n: metrics.count(n) for n in metrics}
    if counts: log(_aws={'Timestamp': int(time.time() * 1000), 'CloudWatchMetrics': [{
        'Namespace': NAMESPACE, 'Dimensions': [[]],
        'Metrics': [{'Name': n, 'Unit': 'Count'} for n in counts]}]}, **counts)
    return {'batchItemFailures': failures}
