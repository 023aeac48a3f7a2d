"""Feast definitions over the request store's files (`digitops features apply` writes them).

An image (the content hash of the normalized 28×28 digit the model saw) is the entity. Every
prediction of it is a row of `predictions`, stamped with the time it was made; every label a
row of `labels`, stamped with the time it was given. A point-in-time join then returns, for a
label, the prediction as it was at a chosen moment, never one made later.
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Array, Float32, String

from digitops.data.descriptors import COLUMNS as DESCRIPTORS

image = Entity(
    name="image",
    join_keys=["image"],
    description="sha256 of the normalized 28×28 image (the request store's image key)",
)

predictions = FeatureView(
    name="predictions",
    entities=[image],
    ttl=timedelta(0),  # a prediction stays the latest one until the image is predicted again
    schema=[
        Field(name="request_id", dtype=String),
        Field(name="model_name", dtype=String),
        Field(name="model_version", dtype=String),
        Field(name="predicted", dtype=String),
        Field(name="confidence", dtype=Float32),
        Field(name="embedding", dtype=Array(Float32)),
        *(Field(name=name, dtype=Float32) for name in DESCRIPTORS),
    ],
    source=FileSource(
        name="request_store_predictions",
        path="data/predictions.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",  # breaks ties within a millisecond
    ),
    online=True,
    description="every prediction the service and the Lambda function made",
)

labels = FeatureView(
    name="labels",
    entities=[image],
    ttl=timedelta(0),
    schema=[
        Field(name="label", dtype=String),
        Field(name="labeler", dtype=String),
        Field(name="labeled_request", dtype=String),
    ],
    source=FileSource(
        name="request_store_labels",
        path="data/labels.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    ),
    online=True,
    description="labels from /feedback, the web page and Label Studio (latest wins)",
)
