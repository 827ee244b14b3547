"""Port tests: LightGCN, FREEDOM and LATTICE written the way their reference
codebases write them (dense similarity matrices, torch.topk, torch.sparse.mm / torch.mm, their
normalisations) against the same models on slifmr_kernels, giving the same losses and
gradients on tie-free data through a few Adam steps (fp32 tolerance).

The "ours" halves are the before/after snippets of docs/PORTING.md.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

import slifmr_kernels as sk

STEPS = 3
U, I, D = 12, 20, 8


def _interactions(seed=0, per_user=5):
    gen = torch.Generator().manual_seed(seed)
    users = torch.arange(U).repeat_interleave(per_user)
    items = torch.stack([torch.randperm(I, generator=gen)[:per_user] for _ in range(U)]).reshape(-1)
    return users, items


def _triples(users, items, seed=1):
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, users.numel(), (16,), generator=gen)
    return users[pick], items[pick], torch.randint(0, I, (16,), generator=gen)


def _bpr(u, p, n):
    return -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()


def _dense_sym_norm(users, items, n_users, n_items):
    """LightGCN's getSparseGraph: D^-1/2 [[0, R], [R^T, 0]] D^-1/2, as a torch sparse COO."""
    n = n_users + n_items
    a = torch.zeros(n, n)
    a[users, n_users + items] = 1.0
    a[n_users + items, users] = 1.0
    d = a.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return (d[:, None] * a * d[None, :]).to_sparse()


def _our_sym_norm(users, items, n_users, n_items):
    n = n_users + n_items
    return (
        sk.CSRGraph.from_edges(
            torch.cat([users, n_users + items]), torch.cat([n_users + items, users]), shape=(n, n)
        )
        .normalize("sym")
        .mark_symmetric()
    )


def _run_both(params, peer_loss, our_loss, lr=0.01):
    """Adam on two copies of ``params``: the losses and every gradient agree at each step."""
    p_peer = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    p_ours = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt_peer = torch.optim.Adam(p_peer.values(), lr=lr)
    opt_ours = torch.optim.Adam(p_ours.values(), lr=lr)
    for step in range(STEPS):
        for opt in (opt_peer, opt_ours):
            opt.zero_grad()
        lp = peer_loss(p_peer)
        lo = our_loss(p_ours)
        lp.backward()
        lo.backward()
        torch.testing.assert_close(lo, lp, rtol=1e-5, atol=1e-6, msg=f"loss, step {step}")
        for k in params:
            gp, go = p_peer[k].grad, p_ours[k].grad
            assert (gp is None) == (go is None), k
            if gp is not None:
                torch.testing.assert_close(
                    go, gp, rtol=1e-4, atol=1e-6, msg=lambda m: f"grad {k}, step {step}: {m}"
                )
        opt_peer.step()
        opt_ours.step()


# ----------------------------------------------------------------------------- LightGCN
def test_lightgcn_port():
    users, items = _interactions()
    bu, bp, bn = _triples(users, items)
    gen = torch.Generator().manual_seed(2)
    params = {"user": torch.randn(U, D, generator=gen) * 0.1, "item": torch.randn(I, D, generator=gen) * 0.1}
    L = 3
    G = _dense_sym_norm(users, items, U, I)
    A = _our_sym_norm(users, items, U, I)

    def peer(p):  # LightGCN-PyTorch: computer() then bpr_loss()
        all_emb = torch.cat([p["user"], p["item"]])
        embs = [all_emb]
        for _ in range(L):
            all_emb = torch.sparse.mm(G, all_emb)
            embs.append(all_emb)
        out = torch.stack(embs, dim=1).mean(dim=1)
        u, i = torch.split(out, [U, I])
        reg = (
            (p["user"][bu].norm(2).pow(2) + p["item"][bp].norm(2).pow(2) + p["item"][bn].norm(2).pow(2))
            / 2
            / len(bu)
        )
        return _bpr(u[bu], i[bp], i[bn]) + 1e-4 * reg

    def ours(p):
        out = sk.propagate_layers(A, torch.cat([p["user"], p["item"]]), L, combine="mean")
        u, i = torch.split(out, [U, I])
        reg = (
            (p["user"][bu].norm(2).pow(2) + p["item"][bp].norm(2).pow(2) + p["item"][bn].norm(2).pow(2))
            / 2
            / len(bu)
        )
        return _bpr(u[bu], i[bp], i[bn]) + 1e-4 * reg

    _run_both(params, peer, ours)


# ----------------------------------------------------------------------------- FREEDOM
def _freedom_peer_knn(feats, k):
    """FREEDOM's build_knn_normalized_graph(..., is_sparse=True, norm_type='sym'): binary kNN
    (the item itself included), row sums (+1e-7) on both sides, a torch sparse COO."""
    context_norm = feats.div(torch.norm(feats, p=2, dim=-1, keepdim=True))
    sim = torch.mm(context_norm, context_norm.transpose(1, 0))
    _, knn_ind = torch.topk(sim, k, dim=-1)
    n = feats.shape[0]
    indices0 = torch.arange(n).unsqueeze(1).expand(-1, k)
    indices = torch.stack((torch.flatten(indices0), torch.flatten(knn_ind)), 0)
    adj = torch.sparse_coo_tensor(indices, torch.ones_like(indices[0], dtype=torch.float32), (n, n))
    row_sum = 1e-7 + torch.sparse.sum(adj, -1).to_dense()
    r_inv_sqrt = torch.pow(row_sum, -0.5)
    values = r_inv_sqrt[indices[0]] * r_inv_sqrt[indices[1]]
    return torch.sparse_coo_tensor(indices, values, (n, n))


def _freedom_ours_knn(feats, k):
    idx, _ = sk.topk_similarity(feats, k, exclude_self=False)
    rows = torch.arange(feats.shape[0]).repeat_interleave(k)
    return sk.CSRGraph.from_edges(rows, idx.reshape(-1), shape=(feats.shape[0],) * 2).normalize("sym_row")


def test_freedom_port():
    users, items = _interactions(seed=3)
    bu, bp, bn = _triples(users, items, seed=4)
    gen = torch.Generator().manual_seed(5)
    v_feat, t_feat = torch.rand(I, 10, generator=gen), torch.rand(I, 6, generator=gen)
    params = {
        "user": torch.randn(U, D, generator=gen) * 0.1,
        "item": torch.randn(I, D, generator=gen) * 0.1,
        "image_trs_w": torch.randn(D, 10, generator=gen) * 0.1,
        "image_trs_b": torch.zeros(D),
    }
    k, image_weight, n_layers, n_ui_layers = 4, 0.1, 1, 2
    # Frozen item-item graph (FREEDOM builds it once from the raw features).
    mm_peer = (
        image_weight * _freedom_peer_knn(v_feat, k) + (1.0 - image_weight) * _freedom_peer_knn(t_feat, k)
    ).coalesce()
    mm_ours = image_weight * _freedom_ours_knn(v_feat, k) + (1.0 - image_weight) * _freedom_ours_knn(
        t_feat, k
    )
    # The denoised user-item graph of one epoch: a kept subset of the edges (FREEDOM samples
    # it by degree each epoch; a fixed mask here), sym-normalised. The kept edges of a sorted
    # edge list are sorted: from_edges takes its no-sort path.
    keep = torch.rand(users.numel(), generator=gen) < 0.8
    ku, ki = users[keep], items[keep]
    adj_peer = _dense_sym_norm(ku, ki, U, I)
    adj_ours = _our_sym_norm(ku, ki, U, I)

    def peer(p):
        h = p["item"]
        for _ in range(n_layers):
            h = torch.sparse.mm(mm_peer, h)
        ego = torch.cat([p["user"], p["item"]])
        all_emb = [ego]
        for _ in range(n_ui_layers):
            ego = torch.sparse.mm(adj_peer, ego)
            all_emb.append(ego)
        all_emb = torch.stack(all_emb, dim=1).mean(dim=1)
        u, i = torch.split(all_emb, [U, I])
        i = i + h
        image_feats = F.linear(v_feat, p["image_trs_w"], p["image_trs_b"])
        return _bpr(u[bu], i[bp], i[bn]) + 0.01 * _bpr(u[bu], image_feats[bp], image_feats[bn])

    def ours(p):
        h = p["item"]
        for _ in range(n_layers):
            h = sk.propagate(mm_ours, h)
        all_emb = sk.propagate_layers(adj_ours, torch.cat([p["user"], p["item"]]), n_ui_layers)
        u, i = torch.split(all_emb, [U, I])
        i = i + h
        image_feats = F.linear(v_feat, p["image_trs_w"], p["image_trs_b"])
        return _bpr(u[bu], i[bp], i[bn]) + 0.01 * _bpr(u[bu], image_feats[bp], image_feats[bn])

    _run_both(params, peer, ours)


# ----------------------------------------------------------------------------- LATTICE
def _lattice_peer_adj(feats, k):
    """LATTICE's build_sim + build_knn_neighbourhood (dense, the kept similarities)."""
    context_norm = feats.div(torch.norm(feats, p=2, dim=-1, keepdim=True))
    sim = torch.mm(context_norm, context_norm.transpose(1, 0))
    knn_val, knn_ind = torch.topk(sim, k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, knn_ind, knn_val)


def _lattice_peer_laplacian(adj):
    rowsum = torch.sum(adj, -1)
    d_inv_sqrt = torch.pow(rowsum, -0.5)
    d_inv_sqrt[torch.isinf(d_inv_sqrt)] = 0.0
    d_mat_inv_sqrt = torch.diagflat(d_inv_sqrt)
    return torch.mm(torch.mm(d_mat_inv_sqrt, adj), d_mat_inv_sqrt)


def _lattice_ours_knn(feats, k):
    """The kNN pattern from the kernels (not differentiable, like torch.topk's indices), the
    edge values as torch ops: the graph's values carry the gradient to ``feats``."""
    idx, _ = sk.topk_similarity(feats.detach(), k, exclude_self=False)
    rows = torch.arange(feats.shape[0]).repeat_interleave(k)
    cols = idx.reshape(-1)
    fn = F.normalize(feats, dim=1)
    vals = (fn[rows] * fn[cols]).sum(1)
    return sk.CSRGraph.from_edges(rows, cols, vals, shape=(feats.shape[0],) * 2)


def test_lattice_port():
    users, items = _interactions(seed=6)
    bu, bp, bn = _triples(users, items, seed=7)
    gen = torch.Generator().manual_seed(8)
    # Non-negative features and projections: every kept similarity is positive (the peers'
    # normalisation takes pow(rowsum, -0.5) of it).
    v_feat, t_feat = torch.rand(I, 10, generator=gen), torch.rand(I, 6, generator=gen)
    params = {
        "user": torch.randn(U, D, generator=gen) * 0.1,
        "item": torch.randn(I, D, generator=gen) * 0.1,
        "image_trs": torch.rand(D, 10, generator=gen) * 0.2,
        "text_trs": torch.rand(D, 6, generator=gen) * 0.2,
        "modal_weight": torch.tensor([0.5, 0.5]),
    }
    k, lam, n_layers = 4, 0.9, 1
    orig_peer = _lattice_peer_laplacian(
        0.5 * _lattice_peer_adj(v_feat, k) + 0.5 * _lattice_peer_adj(t_feat, k)
    )
    orig_ours = (0.5 * _lattice_ours_knn(v_feat, k) + 0.5 * _lattice_ours_knn(t_feat, k)).normalize("sym_row")

    def peer(p):
        image_feats = v_feat @ p["image_trs"].t()
        text_feats = t_feat @ p["text_trs"].t()
        w = F.softmax(p["modal_weight"], dim=0)
        learned = _lattice_peer_laplacian(
            w[0] * _lattice_peer_adj(image_feats, k) + w[1] * _lattice_peer_adj(text_feats, k)
        )
        item_adj = (1 - lam) * learned + lam * orig_peer
        h = p["item"]
        for _ in range(n_layers):
            h = torch.mm(item_adj, h)
        i = p["item"] + F.normalize(h, p=2, dim=1)
        return _bpr(p["user"][bu], i[bp], i[bn])

    def ours(p):
        image_feats = v_feat @ p["image_trs"].t()
        text_feats = t_feat @ p["text_trs"].t()
        w = F.softmax(p["modal_weight"], dim=0)
        learned = (
            w[0] * _lattice_ours_knn(image_feats, k) + w[1] * _lattice_ours_knn(text_feats, k)
        ).normalize("sym_row")
        item_adj = (1 - lam) * learned + lam * orig_ours
        h = p["item"]
        for _ in range(n_layers):
            h = sk.propagate(item_adj, h)  # gradients reach the edge values, then the features
        i = p["item"] + F.normalize(h, p=2, dim=1)
        return _bpr(p["user"][bu], i[bp], i[bn])

    _run_both(params, peer, ours)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_lattice_port_value_gradients_each_backend(backend):
    """The learned graph's value gradients agree across backends (the SDDMM kernels)."""
    if backend not in sk.available_backends("cpu", op="propagate"):
        pytest.skip(f"{backend} not installed")
    gen = torch.Generator().manual_seed(9)
    feats = torch.rand(I, 6, generator=gen, requires_grad=True)
    h0 = torch.randn(I, D, generator=gen)
    out = {}
    for b in ("torch", backend):
        f = feats.detach().clone().requires_grad_(True)
        g = _lattice_ours_knn(f, 4).normalize("sym_row")
        sk.propagate(g, h0, backend=b).pow(2).sum().backward()
        out[b] = f.grad
    torch.testing.assert_close(out[backend], out["torch"], rtol=1e-5, atol=1e-6)
    assert copy.copy(out)  # both computed
