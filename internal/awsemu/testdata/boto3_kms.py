"""Drives the emulator with boto3; run by TestBoto3 (clients_test.go).

Reads the endpoint from CMK_AWSEMU_ENDPOINT and the credentials and Region
from the standard AWS_* variables. Prints OK and exits 0 when every step
behaved as AWS KMS does; otherwise raises.
"""
import os
import sys

import boto3
import botocore.exceptions

endpoint = os.environ["CMK_AWSEMU_ENDPOINT"]
kms = boto3.client("kms", endpoint_url=endpoint)
other_account_arn = os.environ["CMK_AWSEMU_OTHER_KEY"]


def expect_error(code, fn, **kwargs):
    try:
        fn(**kwargs)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        if got != code:
            raise AssertionError(f"{fn.__name__}: error {got}, want {code}") from e
        return e
    raise AssertionError(f"{fn.__name__}: succeeded, want {code}")


key = kms.create_key(Description="boto3")["KeyMetadata"]
arn = key["Arn"]
assert key["KeySpec"] == "SYMMETRIC_DEFAULT" and key["KeyUsage"] == "ENCRYPT_DECRYPT", key
assert key["KeyState"] == "Enabled" and key["Enabled"] is True, key
assert kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key["KeyId"]

ctx = {"cmk:org": "org-a", "cmk:store": "lake"}
blob = kms.encrypt(KeyId=arn, Plaintext=b"secret", EncryptionContext=ctx)["CiphertextBlob"]
out = kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
assert out["Plaintext"] == b"secret" and out["KeyId"] == arn, out
expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=blob,
             EncryptionContext={"cmk:org": "org-b", "cmk:store": "lake"})
# The typed exception class is raised too.
try:
    kms.decrypt(CiphertextBlob=blob[:-1] + bytes([blob[-1] ^ 1]), EncryptionContext=ctx)
    raise AssertionError("decrypt of a tampered blob succeeded")
except kms.exceptions.InvalidCiphertextException:
    pass

dk = kms.generate_data_key(KeyId=arn, KeySpec="AES_256", EncryptionContext=ctx)
assert len(dk["Plaintext"]) == 32
assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == dk["Plaintext"]

kms.create_alias(AliasName="alias/boto3", TargetKeyId=key["KeyId"])
aliases = kms.list_aliases()["Aliases"]
assert [a["AliasName"] for a in aliases] == ["alias/boto3"], aliases
assert any(k["KeyArn"] == arn for k in kms.list_keys()["Keys"])

kms.enable_key_rotation(KeyId=arn, RotationPeriodInDays=180)
status = kms.get_key_rotation_status(KeyId=arn)
assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 180, status
kms.rotate_key_on_demand(KeyId=arn)
rotations = kms.list_key_rotations(KeyId=arn)["Rotations"]
assert len(rotations) == 1 and rotations[0]["RotationType"] == "ON_DEMAND", rotations
assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"secret"

policy = kms.get_key_policy(KeyId=arn, PolicyName="default")["Policy"]
kms.put_key_policy(KeyId=arn, PolicyName="default", Policy=policy)
expect_error("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=arn, PolicyName="default", Policy="{")

kms.disable_key(KeyId=arn)
try:
    kms.encrypt(KeyId=arn, Plaintext=b"x")
    raise AssertionError("encrypt with a disabled key succeeded")
except kms.exceptions.DisabledException:
    pass
kms.enable_key(KeyId=arn)

sched = kms.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7)
assert sched["KeyState"] == "PendingDeletion", sched
expect_error("KMSInvalidStateException", kms.encrypt, KeyId=arn, Plaintext=b"x")
kms.cancel_key_deletion(KeyId=arn)
assert kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "Disabled"

e = expect_error("AccessDeniedException", kms.encrypt, KeyId=other_account_arn, Plaintext=b"x")
assert "is not authorized to perform: kms:Encrypt" in e.response["Error"]["Message"], e.response
expect_error("NotFoundException", kms.describe_key, KeyId="alias/missing")

key_id = os.environ["AWS_ACCESS_KEY_ID"]
bad = boto3.client("kms", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key="x" * 40)
expect_error("InvalidSignatureException", bad.list_keys)
unknown = boto3.client("kms", endpoint_url=endpoint, aws_access_key_id="AKIAUNKNOWNUNKNOWN00",
                       aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])
expect_error("UnrecognizedClientException", unknown.list_keys)

print("OK")
sys.exit(0)
