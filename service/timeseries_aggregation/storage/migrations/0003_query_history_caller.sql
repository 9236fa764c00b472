-- The name of the API key that ran each query ('' when authentication is off).
ALTER TABLE query_history ADD COLUMN caller_name text NOT NULL DEFAULT '';
