"""Every knob of the stack in one place, each with the reason for its value (CONVENTIONS habit 6)."""

SERVICE = "email-notifications"

# Tags on every resource type that takes them; `Environment` is added from the parameter.
STATIC_TAGS = {
    "iac-rlhf-amazon": "true",
    "Service": SERVICE,
    "CostCenter": "operations",
    "Owner": "platform-team",
}

# --- Lambda -------------------------------------------------------------------------------------
RUNTIME = "python3.13"  # current, deprecation 2029
ARCHITECTURE = "arm64"  # Graviton: about 20 % cheaper per GB-second than x86_64
HANDLER = "index.lambda_handler"  # ZipFile code runs as module `index`
# 256 MB: boto3 imports and TLS handshakes are CPU-bound, and Lambda CPU scales with memory; at
# 128 MB the cold start roughly doubles while the monthly cost difference is cents.
MEMORY_MB = 256
SEND_TIMEOUT_S = 30  # one batch of 10 orders: 10 x (claim + SendEmail + record), each ~50-150 ms
# Short on purpose: the feedback queue's visibility timeout is 6 x this (30 s), so a failed SES
# event is retried about 5 times before the send queue retries an order (180 s). The `Send` event
# must set SENT before that retry, or an order whose sender died after SES accepted its email
# could be sent twice. A batch of 25 events takes well under a second.
FEEDBACK_TIMEOUT_S = 5

# --- SQS ----------------------------------------------------------------------------------------
# AWS: the visibility timeout of a Lambda event source queue must be >= 6 x the function timeout,
# so a message is not redelivered while a (retried) invocation still works on it.
VISIBILITY_TIMEOUT_FACTOR = 6
MAX_RECEIVE_COUNT = 5  # attempts before a message moves to its DLQ (AWS recommends >= 5)
# SQS asks KMS for a new data key per producer/consumer after this long: 1 h instead of the default
# 5 min cuts the stack's KMS requests (and cost) by about 60 % for a data key that is reused
# within one queue only.
KMS_DATA_KEY_REUSE_S = 3600
QUEUE_RETENTION_S = 4 * 24 * 3600  # the SQS default, explicit: 5 receives end long before that
DLQ_RETENTION_S = 14 * 24 * 3600  # the SQS maximum: time for an operator to inspect and redrive

SEND_BATCH_SIZE = 10
SEND_BATCHING_WINDOW_S = 1  # a confirmation should leave within seconds; 1 s still batches bursts
FEEDBACK_BATCH_SIZE = 25
FEEDBACK_BATCHING_WINDOW_S = 5  # status tracking is not latency-critical: fewer, fuller invocations
FEEDBACK_MAX_CONCURRENCY = 5  # enough for a 10x burst of events; bounds DynamoDB write spikes

# --- Parameters' defaults -----------------------------------------------------------------------
# Enough copies of the send function to keep SES's usual first production rate (14/s) busy: one
# copy's sends take about 75 ms each (claim, SendEmail, record), so 2 copies can send up to ~25/s
# while the pacer holds them to the rate (README, "Capacity"). Lambda's minimum is 2.
DEFAULT_SEND_MAX_CONCURRENCY = 2
# All of the account's rate: most accounts send only through this stack. Lower it when they don't.
DEFAULT_SES_RATE_SHARE_PERCENT = 100
DEFAULT_RECORD_RETENTION_DAYS = 90
# As long as the delivery records (RecordRetentionDays): a record's logs live as long as it does.
DEFAULT_LOG_RETENTION_DAYS = 90
DEFAULT_MONTHLY_BUDGET_USD = 25
# The retention values CloudWatch Logs accepts.
LOG_RETENTION_CHOICES = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
]

# --- Alarms -------------------------------------------------------------------------------------
# AWS puts an account under review at a 5 % bounce rate or 0.1 % complaint rate (pauses sending at
# 10 % / 0.5 %). We alarm at half of the review thresholds.
BOUNCE_RATE_ALARM_PCT = 2.5
COMPLAINT_RATE_ALARM_PCT = 0.05
SES_REVIEW_BOUNCE_RATE = 0.05  # AWS/SES Reputation.* metrics are fractions, not percent
SES_REVIEW_COMPLAINT_RATE = 0.001
SES_REPUTATION_ALARM_SHARE = 0.5  # alarm when either reputation rate passes half its review rate
# Our own rates are computed over a window long enough to hold a meaningful number of emails, and
# only when at least this many were sent: at 2,000/day, 6 h hold about 500 emails, so a quiet night
# with 20 emails and 1 bounce (5 %) does not page anyone.
BOUNCE_RATE_PERIOD_S = 6 * 3600
BOUNCE_RATE_MIN_EMAILS = 200
COMPLAINT_RATE_PERIOD_S = 24 * 3600
COMPLAINT_RATE_MIN_EMAILS = 500
SES_REPUTATION_PERIOD_S = 3600
SEND_FAILURES_THRESHOLD = 4  # more than this per 5 minutes: transient throttling is retried, a stream of it is not
SEND_QUEUE_MAX_AGE_S = 15 * 60  # a confirmation waiting more than 15 minutes is late
FEEDBACK_QUEUE_MAX_AGE_S = 60 * 60
ALARM_PERIOD_S = 300

# --- Regions ------------------------------------------------------------------------------------
# The commercial regions whose CloudFormation has the AWS::Budgets::Budget resource type; the stack
# creates its budget only there (a template naming a type its region lacks fails with "Unrecognized
# resource types"). Elsewhere, including 11 regions that have SES (README, Deploy, names them), the
# stack has no budget. Source: cfn-lint 1.58's per-region resource types
# (cfnlint/data/schemas/providers/<region>.json, taken from each region's CloudFormation registry);
# tests/test_regions.py recomputes this list from them, so a cfn-lint upgrade that changes the
# facts fails the tests. An allow list on purpose: a new region gets no budget until it is added.
BUDGET_REGIONS = (
    "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
    "ca-central-1", "eu-central-1", "eu-west-1", "eu-west-2", "eu-west-3", "me-south-1",
    "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
)

# --- Self-watching (DESIGN.md, "Self-watching") -------------------------------------------------
# A canary order every this many minutes (0: no canary). The alarm fires when no canary was
# delivered in CANARY_ALARM_INTERVALS intervals in a row.
CANARY_INTERVAL_CHOICES = [0, 5, 10, 15, 30, 60]
DEFAULT_CANARY_INTERVAL_MINUTES = 30  # detection within ~1.5 h; README "Cost" says why
CANARY_ALARM_INTERVALS = 3
CANARY_ADDRESS = "success+canary@simulator.amazonses.com"
# The circuit breaker pauses sending at this share of the rates at which AWS reviews an account.
DEFAULT_PAUSE_AT_PERCENT_OF_REVIEW = 80
# Its alarms look at 5-minute periods (one is enough): the sooner sending stops, the fewer bounces
# and complaints pile up before AWS's review.
CIRCUIT_BREAKER_ALARM_PERIOD_S = 300
# Four idempotent calls (read and set each of the two switches), 12 s each at worst with their
# retries (handlers/circuit_breaker.py, WORST_CASE_SECONDS): 48 s.
CIRCUIT_BREAKER_TIMEOUT_S = 60

# --- Physical names (suffixes after `<env>-`), shared by the builders that must agree on them ---
CONFIG_SET_NAME = "ses-config-set"
SEND_FUNCTION_NAME = "send-order-email"
FEEDBACK_FUNCTION_NAME = "ses-feedback-processor"
TABLE_NAME = "email-deliveries"
DASHBOARD_NAME = "email-notifications"  # + `-<region>`: dashboard names are global to an account
CIRCUIT_BREAKER_FUNCTION_NAME = "email-circuit-breaker"
BUDGET_NAME = "email-notifications"  # + `-<region>`: budget names are unique per account
