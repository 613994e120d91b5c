-- vidsync control plane: projects, per-project IP pools, devices and the audit log.
-- Every state change goes through the functions below; clients never write tables directly.
-- Errors use SQLSTATE class VS: VS400 invalid input, VS404 not found, VS409 conflict,
-- VS503 busy, VS507 pool exhausted. The CLI maps them to exit codes.

CREATE TABLE vidsync.projects (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL UNIQUE,
  cidr cidr NOT NULL CHECK (family(cidr) = 4 AND masklen(cidr) BETWEEN 16 AND 30),
  quarantine interval NOT NULL DEFAULT interval '24 hours' CHECK (quarantine >= interval '0'),
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT projects_cidr_no_overlap EXCLUDE USING gist (cidr inet_ops WITH &&)
);

CREATE TABLE vidsync.devices (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  name text NOT NULL,
  ip inet NOT NULL,
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'released')),
  created_at timestamptz NOT NULL DEFAULT now()
);
-- A released device's name may be registered again; a live one's may not.
CREATE UNIQUE INDEX devices_live_name ON vidsync.devices (project_id, name) WHERE status <> 'released';

-- One row per host address. Allocated: device_id set. Quarantined: device_id null and
-- quarantined_until in the future. Free: otherwise.
CREATE TABLE vidsync.ip_pool (
  project_id bigint NOT NULL REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  ip inet NOT NULL CHECK (family(ip) = 4 AND masklen(ip) = 32),
  device_id bigint REFERENCES vidsync.devices (id) ON DELETE SET NULL,
  quarantined_until timestamptz,
  UNIQUE (project_id, ip)
);
CREATE INDEX ip_pool_unallocated ON vidsync.ip_pool (project_id, ip) WHERE device_id IS NULL;
CREATE UNIQUE INDEX ip_pool_device ON vidsync.ip_pool (device_id) WHERE device_id IS NOT NULL;

-- No foreign keys: the history outlives the projects and devices it mentions.
CREATE TABLE vidsync.audit_log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  actor text NOT NULL DEFAULT session_user,
  action text NOT NULL,
  project_id bigint,
  device_id bigint,
  ip inet,
  detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_project ON vidsync.audit_log (project_id, at);

CREATE FUNCTION vidsync.audit(p_action text, p_project_id bigint, p_device_id bigint, p_ip inet, p_detail jsonb DEFAULT '{}')
RETURNS void LANGUAGE sql AS $$
  INSERT INTO vidsync.audit_log (action, project_id, device_id, ip, detail)
  VALUES (p_action, p_project_id, p_device_id, p_ip, coalesce(p_detail, '{}'));
$$;

CREATE FUNCTION vidsync.check_name(p_kind text, p_name text) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF p_name IS NULL OR p_name !~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' THEN
    RAISE EXCEPTION 'invalid % name "%": use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit', p_kind, coalesce(p_name, '')
      USING ERRCODE = 'VS400';
  END IF;
END $$;

-- Parses an IPv4 network in CIDR notation, saying exactly what is wrong with bad input.
CREATE FUNCTION vidsync.parse_cidr(p_text text) RETURNS cidr LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  v inet;
BEGIN
  IF p_text IS NULL OR position('/' IN p_text) = 0 THEN
    RAISE EXCEPTION 'malformed CIDR "%": expected an IPv4 network with a prefix length, such as 10.99.1.0/24', coalesce(p_text, '')
      USING ERRCODE = 'VS400';
  END IF;
  BEGIN
    v := p_text::inet;
  EXCEPTION WHEN invalid_text_representation OR invalid_parameter_value THEN
    RAISE EXCEPTION 'malformed CIDR "%": expected an IPv4 network such as 10.99.1.0/24', p_text USING ERRCODE = 'VS400';
  END;
  IF family(v) <> 4 THEN
    RAISE EXCEPTION 'IPv6 network "%" is not supported: expected an IPv4 network such as 10.99.1.0/24', p_text USING ERRCODE = 'VS400';
  END IF;
  IF p_text !~ '^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$' THEN
    RAISE EXCEPTION 'malformed CIDR "%": expected four dotted numbers and a prefix length, such as 10.99.1.0/24', p_text USING ERRCODE = 'VS400';
  END IF;
  IF v <> network(v)::inet THEN
    RAISE EXCEPTION 'CIDR "%" has host bits set: expected the network address, %', p_text, network(v) USING ERRCODE = 'VS400';
  END IF;
  RETURN v::cidr;
END $$;

CREATE FUNCTION vidsync.project_id(p_name text) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_id bigint;
BEGIN
  SELECT id INTO v_id FROM vidsync.projects WHERE name = p_name;
  IF v_id IS NULL THEN
    RAISE EXCEPTION 'unknown project "%": see the projects with `vidsync project list`', coalesce(p_name, '') USING ERRCODE = 'VS404';
  END IF;
  RETURN v_id;
END $$;

CREATE FUNCTION vidsync.create_project(p_name text, p_cidr text, p_quarantine_seconds integer DEFAULT 86400)
RETURNS TABLE (name text, cidr cidr, quarantine_seconds integer, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_cidr cidr;
  v_other record;
  v_id bigint;
BEGIN
  PERFORM vidsync.check_name('project', p_name);
  v_cidr := vidsync.parse_cidr(p_cidr);
  IF masklen(v_cidr) < 16 THEN
    RAISE EXCEPTION 'prefix /% of "%" is too large: use a /16 to /30 network', masklen(v_cidr), p_cidr USING ERRCODE = 'VS400';
  END IF;
  IF masklen(v_cidr) > 30 THEN
    RAISE EXCEPTION 'prefix /% of "%" is too small: use a /16 to /30 network', masklen(v_cidr), p_cidr USING ERRCODE = 'VS400';
  END IF;
  IF p_quarantine_seconds IS NULL OR p_quarantine_seconds < 0 THEN
    RAISE EXCEPTION 'quarantine must be zero or more seconds, got %', p_quarantine_seconds USING ERRCODE = 'VS400';
  END IF;
  IF EXISTS (SELECT 1 FROM vidsync.projects p WHERE p.name = p_name) THEN
    RAISE EXCEPTION 'project "%" already exists: choose another name', p_name USING ERRCODE = 'VS409';
  END IF;
  SELECT p.name, p.cidr INTO v_other FROM vidsync.projects p WHERE p.cidr && v_cidr LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION '% overlaps project "%" (%): choose a range that does not overlap', v_cidr, v_other.name, v_other.cidr
      USING ERRCODE = 'VS409';
  END IF;
  -- The unique and exclusion constraints still guard against a concurrent create.
  INSERT INTO vidsync.projects (name, cidr, quarantine)
  VALUES (p_name, v_cidr, make_interval(secs => p_quarantine_seconds))
  RETURNING id INTO v_id;
  PERFORM vidsync.audit('project.create', v_id, NULL, NULL,
    jsonb_build_object('name', p_name, 'cidr', v_cidr::text, 'quarantine_seconds', p_quarantine_seconds));
  RETURN QUERY SELECT p.name, p.cidr, extract(epoch FROM p.quarantine)::integer, p.created_at
    FROM vidsync.projects p WHERE p.id = v_id;
END $$;

CREATE FUNCTION vidsync.list_projects()
RETURNS TABLE (name text, cidr cidr, quarantine_seconds integer, created_at timestamptz, pool_size integer, allocated integer)
LANGUAGE sql STABLE AS $$
  SELECT p.name, p.cidr, extract(epoch FROM p.quarantine)::integer, p.created_at,
         (SELECT count(*) FROM vidsync.ip_pool i WHERE i.project_id = p.id)::integer,
         (SELECT count(*) FROM vidsync.ip_pool i WHERE i.project_id = p.id AND i.device_id IS NOT NULL)::integer
    FROM vidsync.projects p
   ORDER BY p.name;
$$;

-- Adds one pool row per host address of p_cidr (default: the whole project network), skipping
-- the project's network and broadcast addresses. Idempotent: existing rows are left alone.
CREATE FUNCTION vidsync.populate_pool(p_project text, p_cidr text DEFAULT NULL)
RETURNS TABLE (project text, cidr cidr, added integer, total integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_net cidr;
  v_range cidr;
  v_added integer;
BEGIN
  SELECT p.cidr INTO v_net FROM vidsync.projects p WHERE p.id = v_id;
  v_range := CASE WHEN p_cidr IS NULL THEN v_net ELSE vidsync.parse_cidr(p_cidr) END;
  IF NOT v_range <<= v_net THEN
    RAISE EXCEPTION '% is outside project "%" (%): give a range inside the project network', v_range, p_project, v_net
      USING ERRCODE = 'VS400';
  END IF;
  INSERT INTO vidsync.ip_pool (project_id, ip)
  SELECT v_id, set_masklen(network(v_range) + g, 32)
    FROM generate_series(0::bigint, (1::bigint << (32 - masklen(v_range))) - 1) AS g
   WHERE set_masklen(network(v_range) + g, 32) NOT IN (set_masklen(network(v_net), 32), set_masklen(broadcast(v_net), 32))
  ON CONFLICT (project_id, ip) DO NOTHING;
  GET DIAGNOSTICS v_added = ROW_COUNT;
  -- Fresh statistics let allocate_ip read the free-address index in order: without them the
  -- planner sorts the whole pool per allocation (about 100x slower; PGlite has no autovacuum).
  ANALYZE vidsync.ip_pool;
  PERFORM vidsync.audit('pool.populate', v_id, NULL, NULL, jsonb_build_object('range', v_range::text, 'added', v_added));
  RETURN QUERY SELECT p_project, v_range, v_added, (SELECT count(*)::integer FROM vidsync.ip_pool i WHERE i.project_id = v_id);
END $$;

-- Allocates the lowest free address to a new device row, in the caller's transaction.
-- SKIP LOCKED lets concurrent allocations take different rows without waiting. When it finds
-- nothing, addresses that still look free are held by allocations in flight, and one of them may
-- roll back: poll (bounded) until one comes free or none is left. A blocking FOR UPDATE here
-- instead would keep locks on rows it rejects and can deadlock with other waiters.
CREATE FUNCTION vidsync.allocate_ip(p_project text, p_device text)
RETURNS TABLE (device_id bigint, device text, ip inet)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_ip inet;
  v_device_id bigint;
  v_net cidr;
  v_deadline timestamptz := clock_timestamp() + interval '10 seconds';
BEGIN
  PERFORM vidsync.check_name('device', p_device);
  IF EXISTS (SELECT 1 FROM vidsync.devices d WHERE d.project_id = v_id AND d.name = p_device AND d.status <> 'released') THEN
    RAISE EXCEPTION 'device "%" already exists in project "%": choose another name', p_device, p_project USING ERRCODE = 'VS409';
  END IF;
  LOOP
    SELECT i.ip INTO v_ip FROM vidsync.ip_pool i
     WHERE i.project_id = v_id AND i.device_id IS NULL AND (i.quarantined_until IS NULL OR i.quarantined_until <= now())
     ORDER BY i.ip LIMIT 1 FOR UPDATE SKIP LOCKED;
    EXIT WHEN v_ip IS NOT NULL;
    EXIT WHEN NOT EXISTS (SELECT 1 FROM vidsync.ip_pool i
     WHERE i.project_id = v_id AND i.device_id IS NULL AND (i.quarantined_until IS NULL OR i.quarantined_until <= now()));
    IF clock_timestamp() > v_deadline THEN
      RAISE EXCEPTION 'the pool of project "%" is busy: its last free addresses are held by registrations in progress; retry in a moment', p_project
        USING ERRCODE = 'VS503';
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  IF v_ip IS NULL THEN
    SELECT p.cidr INTO v_net FROM vidsync.projects p WHERE p.id = v_id;
    IF NOT EXISTS (SELECT 1 FROM vidsync.ip_pool i WHERE i.project_id = v_id) THEN
      RAISE EXCEPTION 'the pool of project "%" (%) is empty: run `vidsync pool populate %`', p_project, v_net, p_project
        USING ERRCODE = 'VS507';
    END IF;
    RAISE EXCEPTION 'the pool of project "%" (%) is exhausted: % addresses allocated, % quarantined; release devices or populate more of the range',
      p_project, v_net,
      (SELECT count(*) FROM vidsync.ip_pool i WHERE i.project_id = v_id AND i.device_id IS NOT NULL),
      (SELECT count(*) FROM vidsync.ip_pool i WHERE i.project_id = v_id AND i.device_id IS NULL AND i.quarantined_until > now())
      USING ERRCODE = 'VS507';
  END IF;
  INSERT INTO vidsync.devices (project_id, name, ip) VALUES (v_id, p_device, v_ip) RETURNING id INTO v_device_id;
  UPDATE vidsync.ip_pool i SET device_id = v_device_id, quarantined_until = NULL WHERE i.project_id = v_id AND i.ip = v_ip;
  PERFORM vidsync.audit('ip.allocate', v_id, v_device_id, v_ip, jsonb_build_object('device', p_device));
  RETURN QUERY SELECT v_device_id, p_device, v_ip;
END $$;

-- Takes a live device's address back into the pool. The address stays quarantined for the
-- project's quarantine period, so peers that still cache the old certificate's IP do not reach
-- a new device.
CREATE FUNCTION vidsync.release_ip(p_project text, p_device text, p_status text DEFAULT 'released')
RETURNS TABLE (device text, ip inet, quarantined_until timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_device record;
  v_until timestamptz;
BEGIN
  IF p_status NOT IN ('released', 'revoked') THEN
    RAISE EXCEPTION 'release status must be released or revoked, got "%"', p_status USING ERRCODE = 'VS400';
  END IF;
  SELECT d.id, d.ip INTO v_device FROM vidsync.devices d
   WHERE d.project_id = v_id AND d.name = p_device AND d.status = 'active' FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no active device "%" in project "%": see `vidsync pool list % --allocated`', p_device, p_project, p_project
      USING ERRCODE = 'VS404';
  END IF;
  SELECT now() + p.quarantine INTO v_until FROM vidsync.projects p WHERE p.id = v_id;
  UPDATE vidsync.ip_pool i SET device_id = NULL, quarantined_until = v_until WHERE i.device_id = v_device.id;
  UPDATE vidsync.devices d SET status = p_status WHERE d.id = v_device.id;
  PERFORM vidsync.audit('ip.release', v_id, v_device.id, v_device.ip,
    jsonb_build_object('device', p_device, 'status', p_status, 'quarantined_until', v_until));
  RETURN QUERY SELECT p_device, v_device.ip, v_until;
END $$;

CREATE FUNCTION vidsync.pool_status(p_project text)
RETURNS TABLE (project text, cidr cidr, total integer, allocated integer, quarantined integer, free integer)
LANGUAGE sql STABLE AS $$
  SELECT p.name, p.cidr,
         count(i.ip)::integer,
         (count(i.ip) FILTER (WHERE i.device_id IS NOT NULL))::integer,
         (count(i.ip) FILTER (WHERE i.device_id IS NULL AND i.quarantined_until > now()))::integer,
         (count(i.ip) FILTER (WHERE i.device_id IS NULL AND (i.quarantined_until IS NULL OR i.quarantined_until <= now())))::integer
    FROM vidsync.projects p
    LEFT JOIN vidsync.ip_pool i ON i.project_id = p.id
   WHERE p.id = vidsync.project_id(p_project)
   GROUP BY p.name, p.cidr;
$$;

CREATE FUNCTION vidsync.pool_list(p_project text, p_allocated_only boolean DEFAULT false)
RETURNS TABLE (ip inet, state text, device text, quarantined_until timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT i.ip,
         CASE WHEN i.device_id IS NOT NULL THEN 'allocated'
              WHEN i.quarantined_until > now() THEN 'quarantined'
              ELSE 'free' END,
         d.name,
         CASE WHEN i.device_id IS NULL AND i.quarantined_until > now() THEN i.quarantined_until END
    FROM vidsync.ip_pool i
    LEFT JOIN vidsync.devices d ON d.id = i.device_id
   WHERE i.project_id = vidsync.project_id(p_project)
     AND (NOT p_allocated_only OR i.device_id IS NOT NULL)
   ORDER BY i.ip;
$$;
