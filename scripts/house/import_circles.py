import re,sys,os
# import circles between files of one crate: edges from `crate::`/`super::`/`self::` paths
def files(src):
    out={}
    for dp,dn,fns in os.walk(src):
        for f in fns:
            if f.endswith('.rs'):
                p=os.path.join(dp,f); rel=os.path.relpath(p,src)[:-3].split(os.sep)
                if rel[-1] in('mod','lib','main'): rel=rel[:-1]
                out[tuple(rel)]=p
    return out
def strip_tests(t):
    i=t.find('#[cfg(test)]')
    return t if i<0 else t[:i]
def resolve(mods,path):
    # longest prefix that is a module file
    for k in range(len(path),-1,-1):
        if tuple(path[:k]) in mods: return tuple(path[:k])
def refs(text):
    text=re.sub(r'//.*','',text)
    # expand use trees roughly: use crate::a::{b, c::d}
    out=[]
    for m in re.finditer(r'\b((?:crate|super|self)(?:::(?:super|\w+))*)(::\{([^;]*?)\})?',text):
        base=m.group(1).split('::')
        if m.group(3):
            for part in re.split(r'[,{}\s]+',m.group(3)):
                if part: out.append(base+[x for x in part.split('::') if x])
        else: out.append(base)
    return out
def crate_graph(src):
    mods=files(src); g={k:set() for k in mods}
    for mod,p in mods.items():
        isdir=os.path.basename(p) in('mod.rs','lib.rs','main.rs')
        here=list(mod) if isdir else list(mod[:-1])  # module whose children `super` refers from child
        for r in refs(strip_tests(open(p).read())):
            if r[0]=='crate': path=r[1:]
            elif r[0]=='self': path=list(mod)+r[1:]
            else:
                cur=list(mod)
                i=0
                while i<len(r) and r[i]=='super': cur=cur[:-1]; i+=1
                path=cur+r[i:]
            t=resolve(mods,path)
            if t is not None and t!=mod: g[mod].add(t)
    return mods,g
def sccs(g):
    idx={};low={};st=[];on=set();res=[];c=[0]
    sys.setrecursionlimit(10000)
    def v(n):
        idx[n]=low[n]=c[0];c[0]+=1;st.append(n);on.add(n)
        for w in g[n]:
            if w not in idx: v(w);low[n]=min(low[n],low[w])
            elif w in on: low[n]=min(low[n],idx[w])
        if low[n]==idx[n]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==n:break
            if len(comp)>1: res.append(comp)
    for n in g:
        if n not in idx: v(n)
    return res
for src in sys.argv[1:]:
    mods,g=crate_graph(src)
    for comp in sccs(g):
        print(src, ' <-> '.join('/'.join(m) or 'lib' for m in sorted(comp)))
