"""Run the order-confirmation pipeline end to end, locally, from the generated template.

It checks three claims that a template alone cannot show: no email sent twice, no order lost,
every email tracked to its final status. Everything runs in one process per stack copy under moto
(no network, no AWS account):

1. `template`: the template is read from `dist/template.json`, its parameters chosen and its
   intrinsics resolved. Edit the template and the simulation changes with it.
2. `stack`: the data plane (key, topics, queues with their redrive policies, subscriptions,
   table, SES configuration set, identity and event destinations) is created with boto3 in moto
   from the template's properties, and `wire` finds which resource plays which part.
3. `orders`: N orders for the order topic. Recipients are SES mailbox-simulator addresses
   (`bounce+17@simulator.amazonses.com`), which choose each email's outcome; a share of the
   orders is published 2-3 times and a share is invalid.
4. `runtime`: both Lambda functions run from the template's `ZipFile` code, with the environment
   variables the template gives them, loaded as module `index` like Lambda loads them. The event
   source mappings are played on a virtual clock: batches, partial batch failures, visibility
   timeouts, receive counts and dead-letter queues (moto moves a message to the DLQ).
5. `ses`: every email SES accepted produces the event records a real SES publishes (Send,
   Delivery, DeliveryDelay, Bounce, Complaint) to the topics the event destinations name,
   shuffled, some duplicated, some late.
6. `faults`: `--faults RATE` throttles SES, fails DynamoDB calls, and kills the send function
   between SES accepting an email and the function recording it.
7. `runner`: plays it all until nothing is in flight, then the on-call runbook's redrive (every
   DLQ moved back to its queue once) until it settles again (`--no-redrive` skips it). moto is
   single-threaded: `--workers 2` (the default) splits the orders over two copies of the stack,
   one process each (every copy of an order stays in one).
8. `report`: the end state (emails SES accepted, table items, DLQ contents) is checked against
   the invariants, with examples of what happened to an order that broke one, and the time to
   inbox (publish -> SES accepted, publish -> Delivery; for a burst, its drain time against the
   sending rate) is measured on the virtual clock.

Beside the runs: `ses_model` is real SES's account state (also used by the tests), `latency` the
AWS call latencies, `moto_env` the fake credentials and moto's hot spots, `scenarios` the bad
days, `watch` and `alarms` the stack watching itself, and `capacity` a small model of the send
path that the build turns into the README's capacity table (standard library only: the build has
no boto3).

`simulate.py` is the command line: it parses the arguments, calls `run` and prints the report.
"""

from simulation.report import INVARIANTS, broken_invariants, build_report, format_report
from simulation.runner import Progress, run
from simulation.template import DEFAULT_TEMPLATE, TemplateError

__all__ = ["DEFAULT_TEMPLATE", "INVARIANTS", "Progress", "TemplateError", "broken_invariants",
           "build_report", "format_report", "run"]
