-- The certificate version a project issues: nebula v1 certificates (every nebula from 1.6) or v2
-- (nebula 1.10 and newer only). The operator's CA decides it (`ca init --cert-version`); the first
-- certificate of a project fixes it, so a project never mixes versions that some of its devices
-- could not read. NULL until the project's first certificate.
ALTER TABLE vidsync.projects ADD COLUMN cert_version smallint CHECK (cert_version IN (1, 2));

-- Every certificate before this migration was made by a nebula-cert that knew only v1.
UPDATE vidsync.projects p SET cert_version = 1
 WHERE EXISTS (SELECT 1 FROM vidsync.devices d JOIN vidsync.certificates c ON c.device_id = d.id WHERE d.project_id = p.id);

-- Records that the project issues p_version certificates; refuses another version once one is set.
-- Rows, not a scalar, so that SQL and Supabase's API return the same shape.
CREATE FUNCTION vidsync.record_cert_version(p_project text, p_version smallint)
RETURNS TABLE (cert_version smallint) LANGUAGE plpgsql AS $$
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_current smallint;
BEGIN
  IF p_version IS NULL OR p_version NOT IN (1, 2) THEN
    RAISE EXCEPTION 'certificate version must be 1 or 2, not %', coalesce(p_version::text, 'NULL') USING ERRCODE = 'VS400';
  END IF;
  -- Row lock: two operators issuing the first certificates at once agree on one version. NO KEY
  -- UPDATE, not UPDATE: concurrent registrations already hold KEY SHARE on this row (their device
  -- rows reference it), and FOR UPDATE would deadlock with them.
  SELECT p.cert_version INTO v_current FROM vidsync.projects p WHERE p.id = v_id FOR NO KEY UPDATE;
  IF v_current IS NULL THEN
    UPDATE vidsync.projects p SET cert_version = p_version WHERE p.id = v_id;
    PERFORM vidsync.audit('project.cert_version', v_id, NULL, NULL, jsonb_build_object('cert_version', p_version));
  ELSIF v_current <> p_version THEN
    RAISE EXCEPTION 'project "%" issues v% certificates and this CA signs v%: its devices may not read v% certificates', p_project, v_current,
      p_version, p_version USING ERRCODE = 'VS409';
  END IF;
  RETURN QUERY SELECT p_version;
END $$;

-- The project's certificate version, NULL while it has issued none.
CREATE FUNCTION vidsync.project_cert_version(p_project text)
RETURNS TABLE (cert_version smallint) LANGUAGE sql STABLE AS $$
  SELECT p.cert_version FROM vidsync.projects p WHERE p.id = vidsync.project_id(p_project)
$$;

-- Operator functions: not callable by devices (see 003).
REVOKE ALL ON FUNCTION vidsync.record_cert_version(text, smallint) FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION vidsync.project_cert_version(text) FROM PUBLIC, anon, authenticated;
