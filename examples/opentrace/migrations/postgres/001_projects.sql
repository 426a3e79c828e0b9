-- OpenTrace's metadata: the projects traces are sent to.
CREATE TABLE projects (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
