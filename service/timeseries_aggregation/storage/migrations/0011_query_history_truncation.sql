-- A history entry keeps a bounded part of a query's selector (domain/history.py): how many of
-- its series ids and labels the entry leaves out, and whether any was left out or cut. Columns
-- with a constant default are added without rewriting the table, however large it is.
ALTER TABLE query_history
    ADD COLUMN selector_omitted_series_ids integer NOT NULL DEFAULT 0,
    ADD COLUMN selector_omitted_labels integer NOT NULL DEFAULT 0,
    ADD COLUMN selector_truncated boolean NOT NULL DEFAULT false;
