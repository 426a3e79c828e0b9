-- OpenTrace's traces: one row a span. (One statement a file: ClickHouse's HTTP
-- interface takes one query a request.)
CREATE TABLE spans (
    project String,
    trace_id String,
    span_id String,
    name String,
    start DateTime64(3),
    duration_ms UInt32
) ENGINE = MergeTree ORDER BY (project, trace_id, start)
