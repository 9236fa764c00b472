-- Readings: one value per meter and instant; the key makes re-sent readings replace old ones.
CREATE TABLE readings (
    series_id text NOT NULL,
    time timestamptz NOT NULL,
    quantity_kwh double precision NOT NULL,
    PRIMARY KEY (series_id, time)
);

-- Every successful QueryAggregates call; ids grow with time, so they order the history.
CREATE TABLE query_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    query_time timestamptz NOT NULL DEFAULT now(),
    series_id text NOT NULL,
    granularity text NOT NULL,
    start_time timestamptz,
    end_time timestamptz,
    time_zone text NOT NULL,
    page_size integer NOT NULL,
    continued_page boolean NOT NULL,
    bucket_count integer NOT NULL
);
