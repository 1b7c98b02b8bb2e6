"""An RDS instance in the lab's moto, made or removed with boto3 (not with the collection).

    rds_instance.py ensure NAME GIB FREE_GIB   create NAME (GIB allocated) unless it exists; put FREE_GIB of
                                                FreeStorageSpace in CloudWatch; print {"created": bool}
    rds_instance.py delete NAME                delete NAME if it exists; print {"deleted": bool}

Endpoint and credentials from the AWS_* variables of the lab's env.
"""
import argparse
import json

import boto3

GIB = 1024 ** 3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["ensure", "delete"])
    parser.add_argument("name")
    parser.add_argument("gib", nargs="?", type=int, default=20)
    parser.add_argument("free_gib", nargs="?", type=float, default=15)
    args = parser.parse_args()
    rds = boto3.client("rds")
    existing = [d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]]
    if args.action == "delete":
        if args.name in existing:
            rds.delete_db_instance(DBInstanceIdentifier=args.name, SkipFinalSnapshot=True)
        print(json.dumps({"deleted": args.name in existing}))
        return
    if args.name not in existing:
        rds.create_db_instance(DBInstanceIdentifier=args.name, Engine="postgres", DBInstanceClass="db.t3.micro",
                               AllocatedStorage=args.gib, MasterUsername="apex", MasterUserPassword="molecule-lab")
    boto3.client("cloudwatch").put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": "FreeStorageSpace", "Unit": "Bytes", "Value": args.free_gib * GIB,
        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": args.name}]}])
    print(json.dumps({"created": args.name not in existing}))


if __name__ == "__main__":
    main()
