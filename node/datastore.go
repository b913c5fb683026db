package node

// useStore takes the caller's Config.Datastore, locking DataDir when it is set.
func (n *Node) useStore() error {
	if n.cfg.DataDir != "" {
		unlock, err := lockDir(n.cfg.DataDir)
		if err != nil {
			return err
		}
		n.unlock = unlock
	}
	n.store = n.cfg.Datastore
	return nil
}
