-- The privileges of pgjobs' three database roles (docs/security.md), applied or printed by
-- `pgjobs db grant --role NAME --as migrator|worker|reader` (pgjobs/migrations.py).
--
-- Like every named query these are rendered for the schema first ({schema}). The grant blocks
-- hold three more identifiers, written with doubled braces so that they survive that first
-- rendering and are filled in by pgjobs.migrations: {{role}} (the role granted to, validated and
-- quoted), {{owner}} (the schema's owner, whose future tables the default privileges cover) and
-- {{database}} (the current database); {{role_literal}} is the role as a string literal.
--
-- Grants add rights and never take any away (except the version table's writes, below): to demote
-- a role, REVOKE or `DROP OWNED BY` it. GRANT ... ON ALL TABLES covers the tables that exist now;
-- the ALTER DEFAULT PRIVILEGES lines cover those the owner creates in later migrations. Running
-- `pgjobs db grant` again after `pgjobs db upgrade` is harmless and covers both.

-- name: grant_migrator
-- The migration owner: owns the schema and every object in it, so `db upgrade` may alter them.
-- CREATE on the database, because the migrations run CREATE SCHEMA IF NOT EXISTS, which checks
-- that right even when the schema exists. Changing an owner needs a superuser, or a member of
-- both the current owner and the new one.
GRANT CONNECT, CREATE ON DATABASE {{database}} TO {{role}};
ALTER SCHEMA {schema} OWNER TO {{role}};
DO $owner$
DECLARE
    object record;
BEGIN
    -- Tables (their indexes, identity sequences and row types follow them), views, and any
    -- sequence no table owns.
    FOR object IN
        SELECT c.oid::regclass AS name
        FROM pg_class c
        WHERE c.relnamespace = '{schema}'::regnamespace
          AND (c.relkind IN ('r', 'p', 'v', 'm', 'f')
               OR (c.relkind = 'S' AND NOT EXISTS (
                   SELECT FROM pg_depend d
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.deptype IN ('a', 'i'))))
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO %I', object.name, {{role_literal}});
    END LOOP;
    FOR object IN
        SELECT p.oid::regprocedure AS name FROM pg_proc p
        WHERE p.pronamespace = '{schema}'::regnamespace
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', object.name, {{role_literal}});
    END LOOP;
END
$owner$;

-- name: grant_worker
-- Workers, producers (enqueue) and the CLI's commands that change state (`jobs run`, `jobs
-- pause`, `runs cancel`, `runs prune`, ...): rows only, no DDL. Sequences for the identity
-- columns; routines for the trigger functions and for producers that enqueue from SQL
-- (pgjobs.enqueue, whose EXECUTE is not PUBLIC's). The version table is only read (the schema
-- check).
GRANT CONNECT ON DATABASE {{database}} TO {{role}};
GRANT USAGE ON SCHEMA {schema} TO {{role}};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {{role}};
REVOKE INSERT, UPDATE, DELETE ON {schema}.alembic_version FROM {{role}};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {{role}};
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA {schema} TO {{role}};
ALTER DEFAULT PRIVILEGES FOR ROLE {{owner}} IN SCHEMA {schema}
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {{role}};
ALTER DEFAULT PRIVILEGES FOR ROLE {{owner}} IN SCHEMA {schema}
    GRANT USAGE, SELECT ON SEQUENCES TO {{role}};
ALTER DEFAULT PRIVILEGES FOR ROLE {{owner}} IN SCHEMA {schema}
    GRANT EXECUTE ON ROUTINES TO {{role}};

-- name: grant_reader
-- The read-only inspector: the CLI's read commands, the dashboard's pages, `pgjobs metrics`.
GRANT CONNECT ON DATABASE {{database}} TO {{role}};
GRANT USAGE ON SCHEMA {schema} TO {{role}};
GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {{role}};
ALTER DEFAULT PRIVILEGES FOR ROLE {{owner}} IN SCHEMA {schema}
    GRANT SELECT ON TABLES TO {{role}};

-- name: grant_target
-- Who owns the schema (NULL if there is none), the database, and whether the role exists.
SELECT (SELECT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
        WHERE n.nspname = %(schema)s) AS owner,
       current_database() AS database,
       EXISTS (SELECT FROM pg_roles WHERE rolname = %(role)s) AS role_exists;

-- name: can_analyze_runs
-- ANALYZE of a table is for its owner or the database's (superusers are both); anyone else's is
-- skipped with a mere WARNING, so ask first.
SELECT pg_has_role(current_user, c.relowner, 'USAGE')
       OR pg_has_role(current_user, d.datdba, 'USAGE')
FROM pg_class c, pg_database d
WHERE c.oid = '{schema}.runs'::regclass AND d.datname = current_database();
