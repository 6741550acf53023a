"""Security properties of the template: least privilege, encryption, TLS, confused deputies."""

from __future__ import annotations

import fnmatch

import pytest

from conftest import resources_of_type

KEY = {"Fn::GetAtt": ["EmailNotificationsKey", "Arn"]}


def _statements(document: dict) -> list[dict]:
    statements = document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _role_statements(template: dict, role: str) -> dict[str, dict]:
    properties = template["Resources"][role]["Properties"]
    return {
        statement["Sid"]: statement
        for policy in properties["Policies"]
        for statement in _statements(policy["PolicyDocument"])
    }


def _resource_policies(template: dict) -> list[tuple[str, dict]]:
    """(logical id, policy document) of every role policy, topic policy and queue policy."""
    documents = []
    for name, role in resources_of_type(template, "AWS::IAM::Role").items():
        documents += [(name, policy["PolicyDocument"]) for policy in role["Properties"]["Policies"]]
    for resource_type in ("AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy"):
        for name, policy in resources_of_type(template, resource_type).items():
            documents.append((name, policy["Properties"]["PolicyDocument"]))
    return documents


# Actions for which IAM has no resource type (Service Authorization Reference, "Actions defined by
# Amazon SES": the Resource types column is empty), so a statement must name "*". Each is a read
# of account-level settings.
ACTIONS_WITHOUT_RESOURCE_TYPES = {"ses:GetSendQuota"}


def test_no_allow_statement_grants_a_wildcard_action_or_resource(template):
    # Deny statements may be broad (denying more is safe); the key policy is exempt because "*"
    # in a key policy means "this key" (checked separately below).
    for name, document in _resource_policies(template):
        for statement in _statements(document):
            if statement["Effect"] != "Allow":
                continue
            actions = _as_list(statement["Action"])
            for action in actions:
                assert "*" not in action, (name, statement.get("Sid"), action)
            if set(actions) <= ACTIONS_WITHOUT_RESOURCE_TYPES:
                continue
            for resource in _as_list(statement.get("Resource", [])):
                assert resource != "*", (name, statement.get("Sid"))


def test_the_only_star_resource_is_reading_the_send_quota_in_its_own_statement(template):
    star = [(name, statement) for name, document in _resource_policies(template)
            for statement in _statements(document)
            if statement["Effect"] == "Allow" and "*" in _as_list(statement.get("Resource", []))]
    assert [(name, s["Sid"], s["Action"], s["Resource"]) for name, s in star] == [
        ("LambdaSendOrderEmailRole", "ReadSendingRate", ["ses:GetSendQuota"], ["*"])]


def test_roles_use_no_managed_policies_because_basic_execution_grants_logs_on_star(template):
    for name, role in resources_of_type(template, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], name


def test_every_role_statement_has_a_sid_so_reviewers_and_tests_can_name_it(template):
    for name, role in resources_of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"]["Policies"]:
            for statement in _statements(policy["PolicyDocument"]):
                assert statement.get("Sid"), name


def test_send_role_may_send_only_from_the_configured_address_through_our_config_set(template):
    statement = _role_statements(template, "LambdaSendOrderEmailRole")[
        "SendFromAddressViaConfigSet"]
    assert statement["Action"] == ["ses:SendEmail"]
    assert statement["Condition"] == {
        "StringEquals": {"ses:FromAddress": {"Ref": "SesFromAddress"}}}
    resources = [r["Fn::Sub"] if isinstance(r["Fn::Sub"], str) else r["Fn::Sub"][0]
                 for r in statement["Resource"]]
    assert any(r.endswith(":configuration-set/${EnvironmentSuffix}-ses-config-set")
               for r in resources)
    assert all(":ses:${AWS::Region}:${AWS::AccountId}:" in r for r in resources)


def test_send_role_permissions_are_exactly_what_the_send_handler_needs(template):
    statements = _role_statements(template, "LambdaSendOrderEmailRole")
    assert set(statements) == {"SendFromAddressViaConfigSet", "ReadSendingRate",
                               "ClaimAndRecordDeliveries", "ConsumeOwnQueue", "UseStackKey",
                               "WriteOwnLogGroup"}
    assert statements["ClaimAndRecordDeliveries"]["Resource"] == [
        {"Fn::GetAtt": ["EmailDeliveriesTable", "Arn"]}]
    assert statements["ConsumeOwnQueue"]["Resource"] == [
        {"Fn::GetAtt": ["SendOrderEmailQueue", "Arn"]}]
    assert statements["WriteOwnLogGroup"]["Resource"] == [
        {"Fn::GetAtt": ["LambdaSendOrderEmailLogGroup", "Arn"]}]
    assert statements["UseStackKey"]["Resource"] == [KEY]


def test_feedback_role_cannot_send_email(template):
    statements = _role_statements(template, "LambdaSesFeedbackProcessorRole")
    actions = {action for s in statements.values() for action in _as_list(s["Action"])}
    assert not any(action.startswith("ses:") for action in actions)
    assert statements["ConsumeOwnQueue"]["Resource"] == [
        {"Fn::GetAtt": ["SesFeedbackQueue", "Arn"]}]
    assert statements["WriteOwnLogGroup"]["Resource"] == [
        {"Fn::GetAtt": ["LambdaSesFeedbackProcessorLogGroup", "Arn"]}]


def _tls_denied(template: dict, policy_type: str, target_key: str) -> set[str]:
    """Logical ids of the topics/queues covered by a `Deny` on `aws:SecureTransport` false."""
    covered = set()
    for policy in resources_of_type(template, policy_type).values():
        properties = policy["Properties"]
        for statement in _statements(properties["PolicyDocument"]):
            condition = statement.get("Condition", {}).get("Bool", {})
            if statement["Effect"] == "Deny" and condition == {"aws:SecureTransport": "false"}:
                for resource in _as_list(statement["Resource"]):
                    covered.add(resource.get("Ref") or resource["Fn::GetAtt"][0])
    return covered


def test_every_topic_denies_publishing_without_tls(template):
    topics = set(resources_of_type(template, "AWS::SNS::Topic"))
    assert _tls_denied(template, "AWS::SNS::TopicPolicy", "Topics") == topics


def test_every_queue_denies_access_without_tls(template):
    queues = set(resources_of_type(template, "AWS::SQS::Queue"))
    assert _tls_denied(template, "AWS::SQS::QueuePolicy", "Queues") == queues


def test_every_topic_and_queue_is_governed_by_a_policy(template):
    topics = {ref["Ref"] for policy in resources_of_type(template, "AWS::SNS::TopicPolicy").values()
              for ref in policy["Properties"]["Topics"]}
    queues = {ref["Ref"] for policy in resources_of_type(template, "AWS::SQS::QueuePolicy").values()
              for ref in policy["Properties"]["Queues"]}
    assert topics == set(resources_of_type(template, "AWS::SNS::Topic"))
    assert queues == set(resources_of_type(template, "AWS::SQS::Queue"))


def _topic_policy_statements(template: dict) -> dict[str, dict]:
    policy = template["Resources"]["SNSTopicPolicy"]["Properties"]["PolicyDocument"]
    return {s["Sid"]: s for s in _statements(policy)}


@pytest.mark.parametrize("sid, service, topics, source_arn_suffix", [
    ("SesPublishesFromStackConfigSet", "ses.amazonaws.com",
     ["SNSTopicSesDelivery", "SNSTopicSesBounce", "SNSTopicSesComplaint"],
     ":configuration-set/${EnvironmentSuffix}-ses-config-set"),
    ("CloudWatchPublishesStackAlarms", "cloudwatch.amazonaws.com", ["SNSTopicAlarms"],
     ":alarm:${EnvironmentSuffix}-*"),
    ("BudgetsPublishesAccountBudgets", "budgets.amazonaws.com", ["SNSTopicAlarms"], ":*"),
])
def test_service_publishers_are_scoped_by_account_and_source_against_confused_deputies(
        template, sid, service, topics, source_arn_suffix):
    statement = _topic_policy_statements(template)[sid]
    assert statement["Principal"] == {"Service": service}
    assert statement["Action"] == ["sns:Publish"]
    assert [r["Ref"] for r in statement["Resource"]] == topics
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].endswith(
        source_arn_suffix)


def test_the_alarm_publisher_condition_follows_the_explicit_alarm_names(template):
    # The condition must not depend on how CloudFormation would name an alarm: every alarm that
    # notifies the topic is named explicitly, and the name matches the SourceArn pattern.
    pattern = _topic_policy_statements(template)["CloudWatchPublishesStackAlarms"][
        "Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    resource_pattern = pattern.split(":alarm:", 1)[1]
    for name, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        actions = alarm["Properties"].get("AlarmActions", [])
        if isinstance(actions, dict):  # Fn::If [condition, when true, when false]
            actions = [action for branch in actions["Fn::If"][1:] for action in branch]
        if {"Ref": "SNSTopicAlarms"} in actions:
            alarm_name = alarm["Properties"]["AlarmName"]["Fn::Sub"]
            assert fnmatch.fnmatchcase(alarm_name, resource_pattern), (name, alarm_name)


def test_only_the_account_may_publish_orders(template):
    statement = _topic_policy_statements(template)["AccountPublishesOrders"]
    assert statement["Principal"]["AWS"]["Fn::Sub"].endswith(":iam::${AWS::AccountId}:root")
    assert [r["Ref"] for r in statement["Resource"]] == ["SNSTopicOrderConfirmations"]


def test_queues_accept_sns_only_from_their_own_topics(template):
    policy = template["Resources"]["SQSQueuePolicy"]["Properties"]["PolicyDocument"]
    statements = {s["Sid"]: s for s in _statements(policy)}
    orders = statements["OrderTopicDelivers"]
    assert orders["Condition"] == {"ArnEquals": {"aws:SourceArn": [
        {"Ref": "SNSTopicOrderConfirmations"}]}}
    assert [r["Fn::GetAtt"][0] for r in orders["Resource"]] == [
        "SendOrderEmailQueue", "SendOrderEmailDeadLetterQueue"]
    feedback = statements["FeedbackTopicsDeliver"]
    assert feedback["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        {"Ref": "SNSTopicSesDelivery"}, {"Ref": "SNSTopicSesBounce"},
        {"Ref": "SNSTopicSesComplaint"}]


def _key_statements(template: dict) -> dict[str, dict]:
    policy = template["Resources"]["EmailNotificationsKey"]["Properties"]["KeyPolicy"]
    return {s["Sid"]: s for s in _statements(policy)}


def test_key_is_customer_managed_rotated_and_outlives_the_retained_table(template):
    key = template["Resources"]["EmailNotificationsKey"]
    assert key["Properties"]["EnableKeyRotation"] is True
    # The table is retained; deleting its key would make it unreadable after the pending window.
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"


def test_key_lets_ses_cloudwatch_and_budgets_publish_only_for_this_account(template):
    # SES and CloudWatch cannot publish to a topic under an AWS-managed key at all.
    statement = _key_statements(template)["ServicesPublishToStackTopics"]
    assert sorted(statement["Principal"]["Service"]) == [
        "budgets.amazonaws.com", "cloudwatch.amazonaws.com", "ses.amazonaws.com"]
    assert set(statement["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_key_lets_sns_encrypt_only_for_this_stacks_queues(template):
    statement = _key_statements(template)["SnsDeliversToStackQueues"]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    context = statement["Condition"]["StringLike"]["kms:EncryptionContext:aws:sqs:arn"]
    assert context["Fn::Sub"].endswith(":sqs:${AWS::Region}:${AWS::AccountId}:${EnvironmentSuffix}-*")


def test_key_lets_logs_encrypt_only_this_stacks_log_groups(template):
    statement = _key_statements(template)["LogsEncryptStackLogGroups"]
    assert statement["Principal"] == {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}}
    context = statement["Condition"]["StringLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert context["Fn::Sub"].endswith(":log-group:/aws/lambda/${EnvironmentSuffix}-*")


def test_key_admin_is_only_the_account_root(template):
    statements = _key_statements(template)
    broad = [sid for sid, s in statements.items() if "kms:*" in _as_list(s["Action"])]
    assert broad == ["AccountAdministersKey"]
    principal = statements["AccountAdministersKey"]["Principal"]["AWS"]["Fn::Sub"]
    assert principal == "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"


@pytest.mark.parametrize("resource_type, prop", [
    ("AWS::SNS::Topic", "KmsMasterKeyId"),
    ("AWS::SQS::Queue", "KmsMasterKeyId"),
    ("AWS::Logs::LogGroup", "KmsKeyId"),
    ("AWS::Lambda::Function", "KmsKeyArn"),
])
def test_everything_at_rest_is_encrypted_with_the_stack_key(template, resource_type, prop):
    resources = resources_of_type(template, resource_type)
    assert resources
    for name, resource in resources.items():
        assert resource["Properties"][prop] == KEY, name
