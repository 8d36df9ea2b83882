-- Every manager follows changes to functions (deploy, limits, delete) on
-- this channel, so a change made on one node is seen on all at once.
CREATE FUNCTION ol_notify_function_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('ol_functions', OLD.name);
    ELSE
        PERFORM pg_notify('ol_functions', NEW.name);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER functions_notify
AFTER INSERT OR UPDATE OR DELETE ON functions
FOR EACH ROW EXECUTE FUNCTION ol_notify_function_change();
