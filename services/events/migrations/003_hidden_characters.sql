-- Since ids and places refuse control and invisible format characters (HIDDEN_CHARACTERS in
-- terrain/contracts/base.py), stored events read back through the same models must hold none either: rows
-- written before have each such character replaced by U+FFFD, which shows where one was and never leaves an id
-- empty. PostgreSQL text holds no NUL, so the class starts at U+0001.
WITH rule (hidden) AS (VALUES ('[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]'))
UPDATE events_log SET
    community_id = regexp_replace(community_id, rule.hidden, U&'\FFFD', 'g'),
    incident_id = regexp_replace(incident_id, rule.hidden, U&'\FFFD', 'g'),
    location = regexp_replace(location, rule.hidden, U&'\FFFD', 'g')
FROM rule
WHERE community_id ~ rule.hidden OR incident_id ~ rule.hidden OR location ~ rule.hidden;
