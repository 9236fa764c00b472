-- History entries of queries over the series a selector picks record the selector (its
-- series ids and label pairs) and the group_by; their series_id is ''. Entries of one-series
-- queries leave the selector NULL and group_by empty, and read as before. Every entry records
-- whether the query asked for empty buckets too.
ALTER TABLE query_history
    ADD COLUMN selector_series_ids text[],
    ADD COLUMN selector_labels jsonb,
    ADD COLUMN group_by text[] NOT NULL DEFAULT '{}',
    ADD COLUMN include_empty_buckets boolean NOT NULL DEFAULT false;
