-- CA rotation without an outage. A project trusts a set of CAs: the one it started with and each
-- successor `vidsync ca rotate` added, every successor endorsed by its predecessor's key (an
-- ed25519 signature of its fingerprint, made where the CA keys are; the database never signs).
-- Devices add a CA to their pinned set only when a CA they already pin endorsed it, and drop a CA
-- once it is retired here (`vidsync ca retire-old`, refused while an active device still holds a
-- certificate from it: the caller checks the certificates' issuers). A project with no rows
-- trusts the operator's one CA, as before.

CREATE TABLE vidsync.project_cas (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  fingerprint text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
  pem text NOT NULL CHECK (length(pem) BETWEEN 100 AND 8192),
  -- NULL for the project's first CA; otherwise the CA that endorsed this one and its signature.
  endorser text CHECK (endorser ~ '^[0-9a-f]{64}$'),
  signature text CHECK (signature ~ '^[A-Za-z0-9+/]{86}==$'),
  added_at timestamptz NOT NULL DEFAULT now(),
  retired_at timestamptz,
  CONSTRAINT project_cas_endorsed CHECK ((endorser IS NULL) = (signature IS NULL)),
  CONSTRAINT project_cas_unique UNIQUE (project_id, fingerprint)
);

-- A CA added or retired moves the project's version (007), so devices refresh at once.
ALTER TABLE vidsync.project_changes DROP CONSTRAINT project_changes_kind_check;
ALTER TABLE vidsync.project_changes ADD CONSTRAINT project_changes_kind_check
  CHECK (kind IN ('peer', 'lighthouse', 'block', 'unblock', 'folder', 'ca'));

-- Operator: adds a CA to the project's trusted set (idempotent for the same CA).
CREATE FUNCTION vidsync.add_project_ca(p_project text, p_fingerprint text, p_pem text, p_endorser text DEFAULT NULL, p_signature text DEFAULT NULL)
RETURNS TABLE (fingerprint text, added_at timestamptz)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_existing vidsync.project_cas;
BEGIN
  SELECT * INTO v_existing FROM vidsync.project_cas c WHERE c.project_id = v_id AND c.fingerprint = p_fingerprint;
  IF FOUND AND v_existing.retired_at IS NOT NULL THEN
    RAISE EXCEPTION 'the CA % was retired from project "%": a retired CA does not come back', p_fingerprint, p_project USING ERRCODE = 'VS409';
  END IF;
  IF NOT FOUND THEN
    IF p_endorser IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vidsync.project_cas c WHERE c.project_id = v_id AND c.fingerprint = p_endorser AND c.retired_at IS NULL) THEN
      RAISE EXCEPTION 'the endorsing CA % is not trusted by project "%"', p_endorser, p_project USING ERRCODE = 'VS409';
    END IF;
    INSERT INTO vidsync.project_cas (project_id, fingerprint, pem, endorser, signature) VALUES (v_id, p_fingerprint, p_pem, p_endorser, p_signature);
    PERFORM vidsync.record_change(v_id, 'ca', p_fingerprint);
    PERFORM vidsync.audit('ca.add', v_id, NULL, NULL, jsonb_build_object('fingerprint', p_fingerprint, 'endorser', p_endorser));
  END IF;
  RETURN QUERY SELECT c.fingerprint, c.added_at FROM vidsync.project_cas c WHERE c.project_id = v_id AND c.fingerprint = p_fingerprint;
END $$;

-- Operator: the CAs the project trusts, oldest first (none: only the operator's CA).
CREATE FUNCTION vidsync.project_trusted_cas(p_project text)
RETURNS TABLE (fingerprint text, pem text, endorser text, signature text, added_at timestamptz)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT c.fingerprint, c.pem, c.endorser, c.signature, c.added_at FROM vidsync.project_cas c
   WHERE c.project_id = vidsync.project_id(p_project) AND c.retired_at IS NULL ORDER BY c.id;
$$;

-- Operator: the newest certificate of each active device, to tell which CA issued it.
CREATE FUNCTION vidsync.project_device_certificates(p_project text)
RETURNS TABLE (device text, fingerprint text, pem text)
LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT d.name, c.fingerprint, c.pem FROM vidsync.devices d
    JOIN LATERAL (SELECT c.fingerprint, c.pem FROM vidsync.certificates c WHERE c.device_id = d.id ORDER BY c.issued_at DESC, c.id DESC LIMIT 1) c ON true
   WHERE d.project_id = vidsync.project_id(p_project) AND d.status = 'active' AND d.revoked_at IS NULL
   ORDER BY d.name;
$$;

-- Operator: retires a CA of the project; its newest CA cannot be retired.
CREATE FUNCTION vidsync.retire_project_ca(p_project text, p_fingerprint text)
RETURNS TABLE (fingerprint text, retired_at timestamptz)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
BEGIN
  IF NOT EXISTS (SELECT 1 FROM vidsync.project_cas c WHERE c.project_id = v_id AND c.fingerprint = p_fingerprint AND c.retired_at IS NULL) THEN
    RAISE EXCEPTION 'project "%" trusts no CA %', p_project, p_fingerprint USING ERRCODE = 'VS404';
  END IF;
  IF p_fingerprint = (SELECT c.fingerprint FROM vidsync.project_cas c WHERE c.project_id = v_id AND c.retired_at IS NULL ORDER BY c.id DESC LIMIT 1) THEN
    RAISE EXCEPTION 'the CA % is the newest of project "%": it cannot be retired', p_fingerprint, p_project USING ERRCODE = 'VS409';
  END IF;
  UPDATE vidsync.project_cas c SET retired_at = now() WHERE c.project_id = v_id AND c.fingerprint = p_fingerprint;
  PERFORM vidsync.record_change(v_id, 'ca', p_fingerprint);
  PERFORM vidsync.audit('ca.retire', v_id, NULL, NULL, jsonb_build_object('fingerprint', p_fingerprint));
  RETURN QUERY SELECT c.fingerprint, c.retired_at FROM vidsync.project_cas c WHERE c.project_id = v_id AND c.fingerprint = p_fingerprint;
END $$;

-- Device-facing: the CAs its project trusts with their endorsements, oldest first.
CREATE FUNCTION vidsync.device_trusted_cas(p_token text)
RETURNS TABLE (fingerprint text, pem text, endorser text, signature text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT c.fingerprint, c.pem, c.endorser, c.signature
    FROM vidsync.active_device_by_token(p_token) d
    JOIN vidsync.project_cas c ON c.project_id = d.project_id
   WHERE c.retired_at IS NULL ORDER BY c.id;
$$;

-- Grants as in 008: operator functions for service_role only, the device-facing one for anon.
REVOKE ALL ON vidsync.project_cas FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON vidsync.project_cas TO service_role;
ALTER TABLE vidsync.project_cas ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_role_all ON vidsync.project_cas TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON SEQUENCE vidsync.project_cas_id_seq FROM PUBLIC, anon, authenticated;
GRANT USAGE, SELECT ON SEQUENCE vidsync.project_cas_id_seq TO service_role;
REVOKE ALL ON FUNCTION vidsync.add_project_ca(text, text, text, text, text), vidsync.project_trusted_cas(text), vidsync.project_device_certificates(text),
  vidsync.retire_project_ca(text, text), vidsync.device_trusted_cas(text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.add_project_ca(text, text, text, text, text), vidsync.project_trusted_cas(text), vidsync.project_device_certificates(text),
  vidsync.retire_project_ca(text, text), vidsync.device_trusted_cas(text) TO service_role;
GRANT EXECUTE ON FUNCTION vidsync.device_trusted_cas(text) TO anon;
